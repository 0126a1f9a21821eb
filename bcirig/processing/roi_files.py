"""ROI sets from files: bcirig's own ROI file, ImageJ / Fiji ROI sets, and suite2p output.

Every loader returns a :class:`~bcirig.processing.rois.RoiSet` in bcirig's coordinates: pixel
``(y, x)`` is row ``y``, column ``x`` of the plane, whole numbers at pixel *centres*, in the
coordinates of the image the ROIs were drawn on (move them onto today's field with
:meth:`RoiSet.moved`). Errors are :class:`RoiFileError` (a :class:`RoiError`, so a ``ValueError``)
and name the file, the entry (index and name) and the field.

bcirig ROI file (TOML)
----------------------
TOML rather than JSON because the file is meant to be read and edited by hand: it takes comments,
has no brackets to balance across a whole file, and the protocol and rig files an operator already
edits are TOML; Python reads it with the standard library (``tomllib``) and this module writes it.
Layout (``format`` and ``version`` are required; one ``[[roi]]`` table per ROI, in readout order)::

    format = "bcirig-rois"
    version = 1

    [[roi]]
    name = "P+0"        # unique, non-empty
    group = "P+"        # e.g. "P+", "P-", "E1", "E2", "CN"; "none" (the default) for no group
    kind = "soma"       # "soma" (default) or "dendrite"
    plane = 1           # 0-based imaging plane
    parent = ""         # for a dendrite: the name of its soma; "" (default) otherwise
    polygon = [[10.0, 12.5], [14.0, 12.5], [14.0, 18.0]]   # [y, x] vertices

    [[roi]]
    name = "P+0d"
    kind = "dendrite"
    plane = 0
    parent = "P+0"
    center = [40.5, 60.0]   # a disk: [y, x] centre ...
    radius = 4.0            # ... and radius (pixels whose centre is within it)

    [[roi]]
    name = "c7"
    plane = 1
    mask = [[20, 31, 0.5], [20, 32, 1.0]]   # a weighted mask: [y, x, weight] per pixel

Geometry is exactly one of ``polygon`` (the pixels whose centre is inside, even-odd rule),
``center`` + ``radius``, or ``mask``; ``polygon`` together with ``mask`` means "these pixels, and
this outline to show and move" (the writer uses it only when the outline alone would not give the
same pixels). :func:`save_rois` followed by :func:`load_rois` gives an identical ``to_arrays()``.

ImageJ / Fiji (``.roi`` or a ROI Manager ``.zip``, read with ``roifile``)
---------------------------------------------------------------------------
ImageJ coordinates are ``(x, y)`` with whole numbers at pixel *corners* (pixel ``(col, row)``
covers ``col <= x < col + 1``), for integer and sub-pixel coordinates alike, so bcirig's
``(y, x) = (Y - 0.5, X - 0.5)``; a pixel belongs to the ROI if its centre is inside the shape, which
is ImageJ's own rule for polygon masks. A 10 x 10 rectangle at ``x = 20, y = 30`` therefore covers
rows 30..39 and columns 20..29. Supported: polygon, freehand (including ImageJ's ellipse and rotated
rectangle), traced (wand), rectangle (rounded corners ignored), oval (as a polygon of vertices at
most 1/4 px apart) and composite shapes (pixels inside an odd number of its outlines: holes and
separate pieces both work; kept as a mask, with no outline). Line, polyline, freeline, angle, point,
text and image ROIs are refused with an error naming the ROI. ImageJ's own slice position is not
used: every ROI goes on ``plane``.

ROI names come from the ROI's name field, else the zip entry or file name without ``.roi``.
Group, kind and parent come from the ``groups`` mapping (ROI name -> group) if it names the ROI,
else from the naming convention:

* group: the name's leading group tag, the longest of ``P+``, ``P-``, ``E1``, ``E2``, ``CN`` it
  starts with (``"P+3"``, ``"E2_1"``, ``"CN 4"``), else ``"none"``. (``"E12"`` reads as group E1:
  separate a number from an E tag, ``"E1_2"``.)
* dendrite: a name ending in ``d`` whose stem is another ROI of the set is that soma's dendrite
  (``"P+0d"`` of ``"P+0"``, as the simulator names them); it takes its soma's group unless the
  mapping gives one.

suite2p (``stat.npy``, ``iscell.npy``, ``ops.npy`` of one plane folder)
-----------------------------------------------------------------------
``stat.npy`` and ``ops.npy`` are NumPy *object* arrays, i.e. pickled Python objects, and unpickling
a file can run arbitrary code. They are read only with ``allow_pickle=True`` (CLI:
``--allow-pickle``), which says the files are trusted. Each ROI is a mask of suite2p's ``ypix``,
``xpix`` weighted by ``lam``, without the pixels suite2p marks as ``overlap`` unless
``ops["allow_overlap"]`` is true (suite2p's own trace extraction does the same); it is named
``s2p<k>`` after its index ``k`` in ``stat.npy``. With ``only_cells`` only the ROIs whose
``iscell[:, 0]`` is 1 are kept.
"""

from __future__ import annotations

import json
import math
import tomllib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.processing.rois import Roi, RoiError, RoiKind, RoiSet

FORMAT = "bcirig-rois"
VERSION = 1
GROUP_TAGS = ("P+", "P-", "E1", "E2", "CN")
_ROI_KEYS = ("name", "group", "kind", "plane", "parent", "polygon", "center", "radius", "mask")
_MAX_ROI_BYTES = 64 * 1024 * 1024  # one ImageJ ROI (zip entries are read at most this far: no zip bombs)


class RoiFileError(RoiError):
    """An ROI file that cannot be read; the message names the file, the entry and the field."""


class PickleRefusedError(RoiFileError):
    """suite2p files were not read because loading them needs pickle and the caller did not allow it."""


# ============================================================================================ bcirig file
def save_rois(path: str | Path, rois: RoiSet) -> None:
    """Write ``rois`` as a bcirig ROI file (TOML, layout in the module docstring)."""
    lines = [
        "# bcirig ROI file: one [[roi]] table per ROI, in readout order.",
        "# (y, x) = (row, column), whole numbers at pixel centres, reference-image coordinates.",
        f'format = "{FORMAT}"',
        f"version = {VERSION}",
    ]
    for roi in rois:
        lines += ["", "[[roi]]", f"name = {_toml_str(roi.name)}", f"group = {_toml_str(roi.group)}",
                  f"kind = {_toml_str(roi.kind)}", f"plane = {roi.plane}", f"parent = {_toml_str(roi.parent)}"]
        mask_needed = True
        if len(roi.vertices_yx):
            lines.append("polygon = [" + ", ".join(
                f"[{_toml_float(y)}, {_toml_float(x)}]" for y, x in roi.vertices_yx.tolist()) + "]")
            redrawn = Roi.polygon(roi.name, roi.plane, roi.vertices_yx, roi.group, roi.kind, roi.parent)
            mask_needed = not (np.array_equal(redrawn.y, roi.y) and np.array_equal(redrawn.x, roi.x)
                               and np.array_equal(redrawn.w, roi.w))
        if mask_needed:
            triples = [f"[{y}, {x}, {_toml_weight(w)}]" for y, x, w in zip(
                roi.y.tolist(), roi.x.tolist(), roi.w.astype(np.float32), strict=True)]
            rows = [", ".join(triples[i:i + 6]) for i in range(0, len(triples), 6)]
            lines.append("mask = [\n" + "".join(f"  {row},\n" for row in rows) + "]")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def load_rois(path: str | Path) -> RoiSet:
    """Read a bcirig ROI file (TOML, layout in the module docstring)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise RoiFileError(f"{p}: cannot read the ROI file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise RoiFileError(f"{p}: not a text (UTF-8) file: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RoiFileError(f"{p}: not valid TOML: {e}") from e
    if doc.get("format") != FORMAT:
        raise RoiFileError(f"{p}: format: expected {FORMAT!r}, got {doc.get('format')!r} (is this a bcirig ROI file?)")
    if doc.get("version") != VERSION:
        raise RoiFileError(f"{p}: version: expected {VERSION}, got {doc.get('version')!r}")
    unknown = sorted(set(doc) - {"format", "version", "roi"})
    if unknown:
        raise RoiFileError(f"{p}: unknown top-level key(s) {', '.join(unknown)} (expected format, version, [[roi]])")
    entries = doc.get("roi", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RoiFileError(f"{p}: roi: expected [[roi]] tables")
    rois = [_roi_from_entry(p, i, e) for i, e in enumerate(entries)]
    try:
        return RoiSet(rois)
    except RoiError as e:
        raise RoiFileError(f"{p}: {e}") from e


def _roi_from_entry(path: Path, index: int, e: dict[str, Any]) -> Roi:
    label = f"roi #{index}" + (f" ({e['name']!r})" if isinstance(e.get("name"), str) and e["name"] else "")

    def fail(key: str, problem: str) -> RoiFileError:
        return RoiFileError(f"{path}: {label}: {key}: {problem}")

    unknown = sorted(set(e) - set(_ROI_KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(_ROI_KEYS)})")
    name = e.get("name")
    if not isinstance(name, str) or not name:
        raise fail("name", f"a non-empty string is required, got {name!r}")
    texts = {}
    for key, default in (("group", "none"), ("kind", RoiKind.SOMA.value), ("parent", "")):
        value = e.get(key, default)
        if not isinstance(value, str):
            raise fail(key, f"expected a string, got {value!r}")
        texts[key] = value
    if texts["kind"] not in {k.value for k in RoiKind}:
        raise fail("kind", f"{texts['kind']!r} is not one of {', '.join(RoiKind)}")
    if "plane" not in e:
        raise fail("plane", "required (0-based imaging plane)")
    plane = e["plane"]
    if isinstance(plane, bool) or not isinstance(plane, int) or plane < 0:
        raise fail("plane", f"expected a whole number >= 0, got {plane!r}")
    has = {k: k in e for k in ("polygon", "center", "radius", "mask")}
    if has["center"] != has["radius"]:
        raise fail("center" if has["radius"] else "radius", "a disk needs both center = [y, x] and radius")
    if has["center"] and (has["polygon"] or has["mask"]):
        raise fail("center", "give one geometry: polygon, center + radius, or mask")
    if not (has["polygon"] or has["center"] or has["mask"]):
        raise fail("polygon", "no geometry: give polygon = [[y, x], ...], center + radius, or mask = [[y, x, w], ...]")
    kw = {"group": texts["group"], "kind": texts["kind"], "parent": texts["parent"]}
    try:
        if has["center"]:
            center = _numbers(e["center"], 2, fail, "center", "[y, x]")
            radius = e["radius"]
            if not _is_number(radius) or radius <= 0:
                raise fail("radius", f"expected a number > 0, got {radius!r}")
            return Roi.disk(name, plane, (center[0], center[1]), float(radius), **kw)
        vertices = None
        if has["polygon"]:
            raw = e["polygon"]
            if not isinstance(raw, list) or len(raw) < 3:
                raise fail("polygon", "expected a list of at least 3 [y, x] vertices")
            vertices = np.array([_numbers(v, 2, fail, f"polygon[{k}]", "[y, x]") for k, v in enumerate(raw)])
            if not has["mask"]:
                return Roi.polygon(name, plane, vertices, **kw)
        raw = e["mask"]
        if not isinstance(raw, list) or not raw:
            raise fail("mask", "expected a non-empty list of [y, x, weight] pixels")
        ys, xs, ws = [], [], []
        for k, item in enumerate(raw):
            if not (isinstance(item, list) and len(item) == 3):
                raise fail(f"mask[{k}]", f"expected [y, x, weight], got {item!r}")
            y, x, w = item
            if any(isinstance(v, bool) or not isinstance(v, int) for v in (y, x)):
                raise fail(f"mask[{k}]", f"pixel y and x must be whole numbers, got {item!r}")
            if not _is_number(w) or w < 0:
                raise fail(f"mask[{k}]", f"weight must be a finite number >= 0, got {w!r}")
            ys.append(y)
            xs.append(x)
            ws.append(w)
        return Roi(name=name, plane=plane, group=texts["group"], kind=texts["kind"], parent=texts["parent"],
                   y=np.array(ys, np.int32), x=np.array(xs, np.int32), w=np.array(ws, np.float32),
                   vertices_yx=np.zeros((0, 2)) if vertices is None else vertices.astype(np.float64))
    except RoiFileError:
        raise
    except RoiError as err:
        raise RoiFileError(f"{path}: {label}: {err}") from err


def _numbers(value: object, n: int, fail: Any, key: str, shape: str) -> list[float]:
    if not (isinstance(value, list) and len(value) == n) or not all(_is_number(v) for v in value):
        raise fail(key, f"expected {shape} (finite numbers), got {value!r}")
    return [float(v) for v in value]


def _is_number(v: object) -> bool:
    """A finite TOML integer or float (not a boolean)."""
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _toml_str(s: str) -> str:
    """A TOML basic string (JSON escapes are TOML escapes; DEL is escaped as TOML requires)."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_float(v: float) -> str:
    """Shortest text that reads back as the same float64 (always with a '.' or an exponent)."""
    text = repr(float(v))
    return text if any(c in text for c in ".en") else text + ".0"


def _toml_weight(w: np.float32) -> str:
    """Shortest text that reads back as the same float32."""
    return str(np.format_float_positional(w, unique=True, trim="0"))


# ============================================================================================ ImageJ
def load_imagej_rois(path: str | Path, *, plane: int = 0, groups: Mapping[str, str] | None = None) -> RoiSet:
    """ImageJ / Fiji ROIs from a ``.roi`` file or a ROI Manager ``.zip`` (conventions in the module docstring)."""
    import roifile

    p = Path(path)
    if not p.is_file():
        raise RoiFileError(f"{p}: no such ImageJ ROI file")
    entries: list[tuple[str, Any]] = []
    try:
        if p.suffix.lower() == ".zip":
            with zipfile.ZipFile(p) as zf:
                for info in zf.infolist():
                    if info.is_dir() or not info.filename.lower().endswith(".roi"):
                        continue
                    with zf.open(info) as fh:
                        data = fh.read(_MAX_ROI_BYTES)
                    entries.append((Path(info.filename).stem, roifile.ImagejRoi.frombytes(data)))
        else:
            one = roifile.ImagejRoi.fromfile(p)  # a .roi, or the overlay ROIs of an ImageJ .tif
            if isinstance(one, list):
                entries.extend((f"{p.stem}-{i}", r) for i, r in enumerate(one))
            else:
                entries.append((p.stem, one))
    except (OSError, ValueError, zipfile.BadZipFile, RuntimeError) as e:
        raise RoiFileError(f"{p}: not a readable ImageJ ROI file or ROI set: {e}") from e
    if not entries:
        raise RoiFileError(f"{p}: the ROI set is empty")
    names = [(r.name or stem) for stem, r in entries]
    given = dict(groups or {})
    missing = sorted(set(given) - set(names))
    if missing:
        raise RoiFileError(f"{p}: groups names ROI(s) not in the file: {', '.join(missing)}")
    name_set = set(names)
    rois = []
    for i, ((_, r), name) in enumerate(zip(entries, names, strict=True)):
        label = f"{p}: ROI #{i} ({name!r})"
        parent = name[:-1] if name.endswith("d") and name[:-1] in name_set else ""
        kind = RoiKind.DENDRITE if parent else RoiKind.SOMA
        if name in given:
            group = given[name]
        elif parent in given:
            group = given[parent]
        else:
            group = _group_tag(parent or name)
        try:
            rois.append(_imagej_roi(r, name, plane, group, kind, parent, label))
        except RoiFileError:
            raise
        except RoiError as e:
            raise RoiFileError(f"{label}: {e}") from e
    try:
        return RoiSet(rois)
    except RoiError as e:
        raise RoiFileError(f"{p}: {e}") from e


def _group_tag(name: str) -> str:
    """The naming convention's group: the longest known tag the name starts with, else "none"."""
    tags = [t for t in GROUP_TAGS if name.startswith(t)]
    return max(tags, key=len) if tags else "none"


def _imagej_roi(r: Any, name: str, plane: int, group: str, kind: str, parent: str, label: str) -> Roi:
    from roifile import ROI_SUBTYPE, ROI_TYPE

    kw = {"group": group, "kind": kind, "parent": parent}
    subtype = r.subtype
    if subtype in (ROI_SUBTYPE.TEXT, ROI_SUBTYPE.ARROW, ROI_SUBTYPE.IMAGE):
        raise RoiFileError(f"{label}: {subtype.name.lower()} ROIs are not regions; redraw it as a polygon or oval")
    if r.composite:
        pieces = [np.asarray(c, np.float64) for c in r.coordinates(multi=True) if len(c) >= 3]
        if not pieces:
            raise RoiFileError(f"{label}: composite ROI without any closed outline")
        inside: set[tuple[int, int]] = set()
        for k, c in enumerate(pieces):
            try:
                piece = Roi.polygon(f"{name}.{k}", plane, _imagej_to_yx(c))
            except RoiError:
                continue  # an outline around no pixel centre adds nothing
            inside ^= set(zip(piece.y.tolist(), piece.x.tolist(), strict=True))
        if not inside:
            raise RoiFileError(f"{label}: composite ROI covers no pixel centre")
        pix = np.array(sorted(inside), np.int32)
        return Roi(name=name, plane=plane, group=group, kind=kind, parent=parent,
                   y=pix[:, 0], x=pix[:, 1], w=np.ones(len(pix), np.float32))
    t = r.roitype
    if t in (ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED):
        xy = np.asarray(r.coordinates(), np.float64)
        if len(xy) >= 2 and np.array_equal(xy[0], xy[-1]):
            xy = xy[:-1]
        if len(xy) < 3:
            raise RoiFileError(f"{label}: {t.name.lower()} ROI with {len(xy)} vertices (needs at least 3)")
        return Roi.polygon(name, plane, _imagej_to_yx(xy), **kw)
    if t in (ROI_TYPE.RECT, ROI_TYPE.OVAL):
        if r.subpixelresolution and r.widthd > 0 and r.heightd > 0:  # ImageJ's sub-pixel bounds
            x0, y0, w, h = float(r.xd), float(r.yd), float(r.widthd), float(r.heightd)
        else:
            x0, y0, w, h = float(r.left), float(r.top), float(r.right - r.left), float(r.bottom - r.top)
        if not (w > 0 and h > 0):
            raise RoiFileError(f"{label}: {t.name.lower()} ROI of size {w} x {h}")
        if t == ROI_TYPE.RECT:
            xy = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]])
        else:
            n = max(16, math.ceil(4 * math.pi * (w + h) / 2))  # perimeter ~ pi (w + h) / 2: vertices <= 1/4 px apart
            a = np.arange(n) * (2 * math.pi / n)
            xy = np.stack([x0 + w / 2 + w / 2 * np.cos(a), y0 + h / 2 + h / 2 * np.sin(a)], axis=1)
        return Roi.polygon(name, plane, _imagej_to_yx(xy), **kw)
    kind_name = {ROI_TYPE.LINE: "line", ROI_TYPE.POLYLINE: "polyline", ROI_TYPE.FREELINE: "freeline",
                 ROI_TYPE.ANGLE: "angle", ROI_TYPE.POINT: "point"}.get(t, getattr(t, "name", str(t)).lower())
    raise RoiFileError(
        f"{label}: {kind_name} ROIs are not supported (only polygon, freehand, traced, rectangle, oval and "
        "composite ROIs enclose pixels)"
    )


def _imagej_to_yx(xy: np.ndarray) -> np.ndarray:
    """ImageJ (x, y), whole numbers at pixel corners -> bcirig (y, x), whole numbers at pixel centres."""
    return np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5], axis=1)


# ============================================================================================ suite2p
def _suite2p_folder(folder: str | Path, plane: int) -> Path:
    p = Path(folder)
    if (p / "stat.npy").is_file():
        return p
    if (p / f"plane{plane}" / "stat.npy").is_file():
        return p / f"plane{plane}"
    if (p / "suite2p" / f"plane{plane}" / "stat.npy").is_file():
        return p / "suite2p" / f"plane{plane}"
    raise RoiFileError(f"{p}: no suite2p stat.npy here (nor in plane{plane}/ or suite2p/plane{plane}/)")


def _refuse_pickle(folder: Path) -> PickleRefusedError:
    return PickleRefusedError(
        f"{folder}: suite2p's stat.npy and ops.npy are pickled Python objects (NumPy object arrays), and "
        "loading a pickle can run arbitrary code. bcirig reads them only when told the files are trusted: "
        "pass allow_pickle=True (on the command line: --allow-pickle) if they come from your own suite2p "
        "run or another source you trust."
    )


def _load_pickled(path: Path) -> Any:
    if not path.is_file():
        raise RoiFileError(f"{path}: missing (suite2p writes it next to stat.npy)")
    try:
        return np.load(path, allow_pickle=True)
    except Exception as e:  # a corrupt or foreign pickle raises anything at all
        raise RoiFileError(f"{path}: cannot be read as a NumPy file: {type(e).__name__}: {e}") from e


def _load_ops(folder: Path) -> dict[str, Any]:
    raw = _load_pickled(folder / "ops.npy")
    ops = raw.item() if isinstance(raw, np.ndarray) and raw.dtype == object and raw.shape == () else raw
    if not isinstance(ops, dict):
        raise RoiFileError(f"{folder / 'ops.npy'}: expected a dict saved by suite2p, got {type(ops).__name__}")
    for key in ("Ly", "Lx"):
        value = ops.get(key)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise RoiFileError(f"{folder / 'ops.npy'}: {key}: expected the frame size in pixels, got {value!r}")
    return ops


def load_suite2p(
    folder: str | Path, *, allow_pickle: bool = False, plane: int = 0, only_cells: bool = True
) -> RoiSet:
    """suite2p ROIs of one plane as weighted masks (conventions in the module docstring).

    ``folder`` is suite2p's plane folder (holding ``stat.npy``), or a folder with ``plane<plane>/`` or
    ``suite2p/plane<plane>/`` in it; ``plane`` is also the bcirig plane the ROIs go on. Raises
    :class:`PickleRefusedError` unless ``allow_pickle`` is true.
    """
    p = _suite2p_folder(folder, plane)
    if not allow_pickle:
        raise _refuse_pickle(p)
    stat = _load_pickled(p / "stat.npy")
    if not isinstance(stat, np.ndarray) or stat.ndim != 1:
        raise RoiFileError(f"{p / 'stat.npy'}: expected a 1-D array of dicts, got {getattr(stat, 'shape', stat)!r}")
    ops = _load_ops(p)
    height, width = int(ops["Ly"]), int(ops["Lx"])
    keep = np.ones(len(stat), bool)
    if only_cells:
        iscell_path = p / "iscell.npy"
        if not iscell_path.is_file():
            raise RoiFileError(f"{iscell_path}: missing (needed for only_cells=True)")
        try:
            iscell = np.load(iscell_path, allow_pickle=False)
        except ValueError as e:
            raise RoiFileError(f"{iscell_path}: expected a numeric (N, 2) array: {e}") from e
        if iscell.ndim != 2 or iscell.shape[0] != len(stat) or iscell.shape[1] < 1:
            raise RoiFileError(f"{iscell_path}: shape {iscell.shape}, expected ({len(stat)}, 2) like stat.npy")
        keep = np.asarray(iscell[:, 0]) > 0.5
    allow_overlap = bool(ops.get("allow_overlap", False))
    rois = []
    for k in np.flatnonzero(keep).tolist():
        rois.append(_suite2p_roi(p / "stat.npy", k, stat[k], plane, height, width, allow_overlap))
    try:
        return RoiSet(rois)
    except RoiError as e:
        raise RoiFileError(f"{p}: {e}") from e


def _suite2p_roi(path: Path, k: int, s: Any, plane: int, height: int, width: int, allow_overlap: bool) -> Roi:
    label = f"{path}: ROI #{k}"
    if not isinstance(s, dict):
        raise RoiFileError(f"{label}: expected a dict, got {type(s).__name__}")
    arrays = {}
    for key in ("ypix", "xpix", "lam"):
        if key not in s:
            raise RoiFileError(f"{label}: {key}: missing")
        arrays[key] = np.asarray(s[key]).ravel()
    ys, xs, lam = arrays["ypix"], arrays["xpix"], arrays["lam"]
    if not (len(ys) == len(xs) == len(lam)) or not len(ys):
        raise RoiFileError(f"{label}: ypix, xpix and lam must be equally long and non-empty "
                           f"(got {len(ys)}, {len(xs)}, {len(lam)})")
    if not (np.issubdtype(ys.dtype, np.integer) and np.issubdtype(xs.dtype, np.integer)):
        raise RoiFileError(f"{label}: ypix / xpix: expected whole pixel numbers, got {ys.dtype} / {xs.dtype}")
    if ys.min() < 0 or ys.max() >= height or xs.min() < 0 or xs.max() >= width:
        raise RoiFileError(f"{label}: ypix / xpix: pixels outside the {height} x {width} frame of ops.npy")
    lam = lam.astype(np.float64)
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise RoiFileError(f"{label}: lam: weights must be finite and >= 0")
    use = lam > 0
    if not allow_overlap and "overlap" in s:
        overlap = np.asarray(s["overlap"], bool).ravel()
        if len(overlap) != len(ys):
            raise RoiFileError(f"{label}: overlap: {len(overlap)} values for {len(ys)} pixels")
        use &= ~overlap
    if not use.any():
        raise RoiFileError(f"{label}: no pixel left (all weights zero or all pixels overlap other ROIs)")
    return Roi(name=f"s2p{k}", plane=plane, y=ys[use].astype(np.int32), x=xs[use].astype(np.int32),
               w=lam[use].astype(np.float32))


def suite2p_mean_image(
    folder: str | Path, *, allow_pickle: bool = False, plane: int = 0, key: str = "meanImg"
) -> np.ndarray:
    """suite2p's mean image of one plane (``ops[key]``: ``"meanImg"`` or the enhanced ``"meanImgE"``),
    float32 (Ly, Lx): the image suite2p's ROIs were drawn on, to align with today's reference
    (:func:`bcirig.processing.registration.align_fov`). Needs ``allow_pickle`` like :func:`load_suite2p`."""
    if key not in ("meanImg", "meanImgE"):
        raise ValueError(f"key must be 'meanImg' or 'meanImgE' (full-frame images), got {key!r}")
    p = _suite2p_folder(folder, plane)
    if not allow_pickle:
        raise _refuse_pickle(p)
    ops = _load_ops(p)
    if key not in ops:
        raise RoiFileError(f"{p / 'ops.npy'}: {key}: missing")
    img = np.asarray(ops[key], np.float32)
    if img.shape != (int(ops["Ly"]), int(ops["Lx"])):
        raise RoiFileError(f"{p / 'ops.npy'}: {key}: shape {img.shape}, expected (Ly, Lx) = ({ops['Ly']}, {ops['Lx']})")
    return img


__all__ = [
    "FORMAT", "GROUP_TAGS", "VERSION", "PickleRefusedError", "RoiFileError", "load_imagej_rois", "load_rois",
    "load_suite2p", "save_rois", "suite2p_mean_image",
]
