"""The example protocols and rig files that ship with bcirig, found by name.

In a source checkout (and an editable install) they are the repository's ``protocols/*.toml`` and
``hardware/rigs/*.toml``, the files users read and copy. A wheel carries copies of the same files as
package data (``bcirig/examples/protocols``, ``bcirig/examples/rigs``; see ``pyproject.toml``), so
``bcirig demo`` and ``bcirig run francioni2026`` work from any directory after ``pip install bcirig``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
_IN_REPO = {"protocols": _REPO / "protocols", "rigs": _REPO / "hardware" / "rigs"}


def examples_dir(kind: str) -> Path:
    """The folder of shipped ``kind`` files ('protocols' or 'rigs')."""
    if kind not in _IN_REPO:
        raise ValueError(f"kind must be 'protocols' or 'rigs', not {kind!r}")
    packaged = Path(str(resources.files(__name__) / kind))
    if packaged.is_dir():  # installed from a wheel
        return packaged
    if _IN_REPO[kind].is_dir():  # source checkout or editable install
        return _IN_REPO[kind]
    raise FileNotFoundError(f"bcirig's example {kind} are missing (looked in {packaged} and {_IN_REPO[kind]}); "
                            "reinstall bcirig")


def names(kind: str) -> list[str]:
    """Names of the shipped ``kind`` files, without '.toml'."""
    return sorted(p.stem for p in examples_dir(kind).glob("*.toml"))


def resolve(name_or_path: str | Path, kind: str) -> Path:
    """An existing file as given, else the shipped file of that name (``francioni2026`` or ``sim.toml``).

    Raises FileNotFoundError naming both places looked in and the shipped names.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.parent == Path("."):
        shipped = examples_dir(kind) / (p.name if p.suffix == ".toml" else f"{p.name}.toml")
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(f"{name_or_path}: no such file, and no shipped {kind[:-1]} of that name "
                            f"(shipped: {', '.join(names(kind))})")


def protocol(name_or_path: str | Path) -> Path:
    """A protocol file by path or shipped name."""
    return resolve(name_or_path, "protocols")


def rig(name_or_path: str | Path) -> Path:
    """A rig file by path or shipped name."""
    return resolve(name_or_path, "rigs")
