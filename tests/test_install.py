"""A normal (non-editable) install works from any directory: the wheel carries everything bcirig needs.

Builds the wheel from this tree, installs it into a fresh virtual environment and runs a lockstep
session of the shipped demo protocol on the shipped simulated rig from a directory outside the
repository. The new environment borrows this environment's third-party packages through a .pth file
(the machine reaches only package registries, and a full dependency install would take minutes): what
is tested is bcirig's own wheel — its modules, its package data, its entry point — not pip's resolver.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import h5py
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "bcirig").rglob("__init__.py")}
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"bcirig.examples.protocols", "bcirig.examples.rigs"}


@pytest.mark.slow
def test_wheel_installs_and_runs_a_session_outside_the_repo(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("bcirig-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BCIRIG_VALVE_BUILD")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    where = subprocess.run([str(py), "-c", "import bcirig, bcirig.examples as e; print(bcirig.__file__); "
                            "print(e.examples_dir('protocols'))"], cwd=work, env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel's copy, not this tree

    done = subprocess.run([str(venv / "bin" / "bcirig"), "run", "demo", "--rig", "sim", "--mode", "lockstep",
                           "--data-dir", "data", "--no-frames", "--fresh"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (session,) = (work / "data" / "sim").glob("*/session.h5")
    with h5py.File(session, "r") as f:
        assert f.attrs["complete"]
        assert f.attrs["protocol_name"] == "demo"
        assert len(f["trials/outcome"]) == 12  # demo.toml's trial count
    print(f"\nwheel build + install + lockstep demo session: {time.perf_counter() - t0:.1f} s")
