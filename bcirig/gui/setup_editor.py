"""The set-up phase in the console: the ROI editing itself, as a plain object (no Qt), and its exchange files.

:class:`SetupEditor` holds the ROI list the operator builds on the reference image: polygons drawn,
moved, reshaped and deleted; detected candidates picked by clicking on them; each ROI's group (P+,
P-, ...) and kind (soma, or dendrite of a named soma); saving and loading in bcirig's ROI file format
(and reading ImageJ ROI sets); and, from day 2 on, the operator's verdict on the proposed field-of-view
alignment. The Qt window (:mod:`bcirig.gui.setup_window`) only turns mouse and keyboard input into these
calls and draws the result.

The supervisor and the editor's window exchange files in a folder (:func:`write_request`,
:func:`read_answer`): the request holds the reference image, the candidates, the proposed ROIs and the
alignment; the answer is ``answer.json`` (accept or reject, and why) with, on accept, ``rois.toml``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bcirig.processing.rois import KINDS, Roi, RoiError, RoiSet

DEFAULT_GROUPS = ("P+", "P-")


@dataclass
class EditRoi:
    """One ROI being edited: a polygon (``vertices`` (n, 2) y, x) or a pixel mask (from a candidate)."""

    group: str = "none"
    kind: str = "soma"
    parent: int = -1  # a dendrite: the index (in the editor's list) of its soma
    vertices: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    candidate: int = -1  # the candidate's rank it was picked from; -1 drawn or loaded

    def roi(self, name: str, plane: int, parent: str = "") -> Roi:
        """As a pipeline ROI."""
        if len(self.vertices) >= 3:
            return Roi.polygon(name, plane, self.vertices, self.group, self.kind, parent)
        return Roi(name=name, plane=plane, group=self.group, kind=self.kind, parent=parent,
                   y=self.y.astype(np.int32), x=self.x.astype(np.int32), w=np.ones(len(self.y), np.float32))

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """The pixels it covers (y, x)."""
        if len(self.vertices) >= 3:
            r = Roi.polygon("_", 0, self.vertices)
            return r.y, r.x
        return self.y, self.x

    def contains(self, y: float, x: float) -> bool:
        """Whether pixel (round(y), round(x)) is inside."""
        ys, xs = self.pixels()
        return bool(np.any((ys == round(y)) & (xs == round(x))))


class SetupEditor:
    """The operator's ROI list on one plane's reference image (a plain object; the window draws it)."""

    def __init__(self, shape: tuple[int, int], *, plane: int = 0, candidates: list[Roi] | None = None,
                 groups: tuple[str, ...] = DEFAULT_GROUPS, rois: RoiSet | None = None) -> None:
        self.shape, self.plane = shape, plane
        self.candidates: list[Roi] = list(candidates or [])
        self.groups: list[str] = list(groups)
        self.group = self.groups[0] if self.groups else "none"  # what a new ROI is assigned to
        self.rois: list[EditRoi] = []
        self.selected: int | None = None
        self.alignment: dict[str, Any] = {}  # day 2+: offset, quality, previous day (the proposal)
        self.alignment_verdict: bool | None = None  # the operator's: True confirmed, False rejected
        if rois is not None:
            self.replace_all(rois)

    # ------------------------------------------------------------------ building
    def add_polygon(self, vertices: np.ndarray | list[list[float]], group: str | None = None,
                    kind: str = "soma") -> int:
        """A drawn polygon ((y, x) vertices, at least 3, inside the image); returns its index."""
        v = np.asarray(vertices, np.float64)
        if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
            raise RoiError(f"a polygon needs at least 3 (y, x) vertices, got {v.shape}")
        self._check_inside(v)
        Roi.polygon("_", self.plane, v)  # raises if it covers no pixel centre
        self.rois.append(EditRoi(group=group or self.group, kind=kind, vertices=v))
        self.selected = len(self.rois) - 1
        return self.selected

    def candidate_at(self, y: float, x: float) -> int | None:
        """The candidate under pixel (y, x): inside its mask, else the nearest centre within its radius."""
        iy, ix = round(y), round(x)
        for k, c in enumerate(self.candidates):
            if np.any((c.y == iy) & (c.x == ix)):
                return k
        best, best_d = None, math.inf
        for k, c in enumerate(self.candidates):
            cy, cx = c.centroid_yx
            d = math.hypot(cy - y, cx - x)
            if d <= max(1.5, math.sqrt(c.npix / math.pi)) and d < best_d:
                best, best_d = k, d
        return best

    def roi_at(self, y: float, x: float) -> int | None:
        """The ROI under pixel (y, x), the one on top (the last added) if several."""
        for i in range(len(self.rois) - 1, -1, -1):
            if self.rois[i].contains(y, x):
                return i
        return None

    def pick(self, y: float, x: float) -> int | None:
        """A click at (y, x): an ROI there is selected; else the candidate there becomes an ROI of the
        current group (selected). Returns the selected ROI's index, None if there is nothing there."""
        hit = self.roi_at(y, x)
        if hit is not None:
            self.selected = hit
            return hit
        k = self.candidate_at(y, x)
        if k is None:
            self.selected = None
            return None
        c = self.candidates[k]
        self.rois.append(EditRoi(group=self.group, y=c.y.copy(), x=c.x.copy(), candidate=k))
        self.selected = len(self.rois) - 1
        return self.selected

    def picked_candidates(self) -> list[int]:
        """Ranks of the candidates taken as ROIs, in ROI order."""
        return [r.candidate for r in self.rois if r.candidate >= 0]

    # ------------------------------------------------------------------ editing
    def move(self, i: int, dy: float, dx: float) -> None:
        """Move ROI ``i`` by (dy, dx) px (a mask by whole pixels); refused if it would leave the image."""
        r = self._get(i)
        if len(r.vertices):
            v = r.vertices + np.array([dy, dx])
            self._check_inside(v)
            r.vertices = v
        else:
            ny, nx = r.y + round(dy), r.x + round(dx)
            self._check_inside(np.stack([ny, nx], axis=1).astype(np.float64))
            r.y, r.x, r.candidate = ny.astype(np.int32), nx.astype(np.int32), -1
        self.selected = i

    def move_vertex(self, i: int, k: int, y: float, x: float) -> None:
        """Put vertex ``k`` of polygon ROI ``i`` at (y, x)."""
        r = self._get(i)
        if not len(r.vertices):
            raise RoiError(f"ROI {i} is a pixel mask (a picked candidate): it has no vertices to move")
        if not 0 <= k < len(r.vertices):
            raise RoiError(f"ROI {i} has {len(r.vertices)} vertices, no vertex {k}")
        v = r.vertices.copy()
        v[k] = (y, x)
        self._check_inside(v)
        Roi.polygon("_", self.plane, v)
        r.vertices = v

    def delete(self, i: int) -> None:
        """Remove ROI ``i``; a dendrite of it loses its parent (becomes a soma)."""
        self._get(i)
        del self.rois[i]
        for r in self.rois:
            if r.parent == i:
                r.parent, r.kind = -1, "soma"
            elif r.parent > i:
                r.parent -= 1
        self.selected = None

    def assign(self, i: int, group: str) -> None:
        """Put ROI ``i`` in ``group`` (a new group name is added to the list)."""
        if not group:
            raise RoiError("a group needs a non-empty name")
        self._get(i).group = group
        if group not in self.groups and group != "none":
            self.groups.append(group)

    def set_kind(self, i: int, kind: str, parent: int = -1) -> None:
        """ROI ``i`` is a soma, or the dendrite of soma ``parent`` (it takes the soma's group)."""
        if kind not in KINDS:
            raise RoiError(f"kind {kind!r} is not one of {KINDS}")
        r = self._get(i)
        if kind == "dendrite":
            soma = self._get(parent)
            if parent == i or soma.kind != "soma":
                raise RoiError(f"ROI {i}: a dendrite's parent must be another soma (got ROI {parent})")
            r.kind, r.parent, r.group = kind, parent, soma.group
        else:
            r.kind, r.parent = "soma", -1

    # ------------------------------------------------------------------ results
    def names(self) -> list[str]:
        """Each ROI's name: group + k for somata (in order within the group), the soma's name + 'd' for
        a dendrite; 'roi' + k for ungrouped somata."""
        out = [""] * len(self.rois)
        counts: dict[str, int] = {}
        for i, r in enumerate(self.rois):
            if r.kind == "soma":
                g = r.group if r.group != "none" else "roi"
                out[i] = f"{g}{counts.get(g, 0)}"
                counts[g] = counts.get(g, 0) + 1
        for i, r in enumerate(self.rois):
            if r.kind == "dendrite":
                out[i] = out[r.parent] + "d"
        return out

    def roi_set(self) -> RoiSet:
        """The ROIs as the pipeline takes them (RoiError if there are none)."""
        if not self.rois:
            raise RoiError("no ROIs: draw polygons or click candidates first")
        names = self.names()
        return RoiSet(r.roi(names[i], self.plane, names[r.parent] if r.kind == "dendrite" else "")
                      for i, r in enumerate(self.rois))

    def replace_all(self, rois: RoiSet) -> None:
        """Start over from an ROI set (a loaded file, the proposal); only this editor's plane is kept."""
        names = [r.name for r in rois if r.plane == self.plane]
        kept = [r for r in rois if r.plane == self.plane]
        self.rois = []
        for r in kept:
            parent = names.index(r.parent) if r.kind == "dendrite" and r.parent in names else -1
            self.rois.append(EditRoi(group=r.group, kind=r.kind if parent >= 0 or r.kind == "soma" else "soma",
                                     parent=parent, vertices=np.asarray(r.vertices_yx, np.float64).copy(),
                                     y=r.y.copy(), x=r.x.copy()))
            if r.group not in self.groups and r.group != "none":
                self.groups.append(r.group)
        self.selected = None

    def save(self, path: str | Path) -> None:
        """Write a bcirig ROI file (TOML)."""
        from bcirig.processing.roi_files import save_rois

        save_rois(path, self.roi_set())

    def load(self, path: str | Path) -> None:
        """Read a bcirig ROI file, or an ImageJ/Fiji ROI set (.roi/.zip), replacing the list."""
        from bcirig.processing.roi_files import load_imagej_rois, load_rois

        p = Path(path)
        rois = load_imagej_rois(p, plane=self.plane) if p.suffix.lower() in (".roi", ".zip") else load_rois(p)
        self.replace_all(rois)

    def confirm_alignment(self, ok: bool) -> None:
        """The operator's verdict on the proposed field-of-view alignment (day 2 on)."""
        if not self.alignment:
            raise RoiError("there is no alignment to confirm: this is day 1 (no previous field)")
        self.alignment_verdict = ok

    def ready(self) -> str:
        """'' if the set-up can be accepted, else what is missing (one line)."""
        if not self.rois:
            return "no ROIs yet"
        if self.alignment and self.alignment_verdict is not True:
            return "confirm (or reject) the field-of-view alignment first"
        try:
            self.roi_set()
        except RoiError as exc:
            return str(exc)
        return ""

    # ------------------------------------------------------------------ helpers
    def _get(self, i: int) -> EditRoi:
        if not 0 <= i < len(self.rois):
            raise RoiError(f"no ROI {i} (there are {len(self.rois)})")
        return self.rois[i]

    def _check_inside(self, yx: np.ndarray) -> None:
        h, w = self.shape
        if len(yx) and (yx[:, 0].min() < -0.5 or yx[:, 1].min() < -0.5 or yx[:, 0].max() > h - 0.5
                        or yx[:, 1].max() > w - 0.5):
            raise RoiError(f"outside the {h}x{w} image")


# ---------------------------------------------------------------------------------------------- exchange files
def write_request(folder: Path, reference: np.ndarray, plane: int, candidates: list[Roi],
                  proposal: RoiSet | None, info: dict[str, Any], groups: list[str]) -> None:
    """What the supervisor hands the set-up window: reference, candidates, proposal, alignment, groups."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"reference": np.asarray(reference, np.float32)}
    if candidates:
        arrays.update({f"cand_{k}": v for k, v in RoiSet(replace(c, name=f"c{i}")
                                                         for i, c in enumerate(candidates)).to_arrays().items()})
    if proposal is not None and len(proposal):
        arrays.update({f"prop_{k}": v for k, v in proposal.to_arrays().items()})
    np.savez(folder / "request.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds as allow_pickle
    (folder / "request.json").write_text(json.dumps({"plane": plane, "info": info, "groups": groups},
                                                    allow_nan=True, default=str))


def read_request(folder: Path) -> tuple[np.ndarray, int, list[Roi], RoiSet | None, dict[str, Any], list[str]]:
    """The set-up window's side of :func:`write_request`."""
    meta = json.loads((folder / "request.json").read_text())
    with np.load(folder / "request.npz", allow_pickle=False) as z:
        reference = z["reference"]
        cand = {k[5:]: z[k] for k in z.files if k.startswith("cand_")}
        prop = {k[5:]: z[k] for k in z.files if k.startswith("prop_")}
    candidates = list(RoiSet.from_arrays(cand)) if cand else []
    proposal = RoiSet.from_arrays(prop) if prop else None
    return reference, int(meta["plane"]), candidates, proposal, dict(meta["info"]), list(meta["groups"])


def write_answer(folder: Path, accept: bool, reason: str = "", editor: SetupEditor | None = None) -> None:
    """The operator's verdict; on accept, the ROIs as ``rois.toml``."""
    if accept:
        if editor is None:
            raise ValueError("an accepted set-up needs its editor's ROIs")
        editor.save(folder / "rois.toml")
    body = {"accept": accept, "reason": reason,
            "alignment_confirmed": editor.alignment_verdict if editor is not None else None,
            "picked": editor.picked_candidates() if editor is not None else []}
    (folder / "answer.json").write_text(json.dumps(body))


def read_answer(folder: Path) -> tuple[bool, str, RoiSet | None, dict[str, Any]]:
    """(accepted, reason, ROIs, the whole answer) from the set-up window; no answer is a rejection."""
    from bcirig.processing.roi_files import load_rois

    path = folder / "answer.json"
    if not path.is_file():
        return False, "the set-up window closed without an answer", None, {}
    body = json.loads(path.read_text())
    if not body.get("accept"):
        return False, str(body.get("reason") or "rejected"), None, body
    return True, str(body.get("reason", "")), load_rois(folder / "rois.toml"), body
