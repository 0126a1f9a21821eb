"""Regions of interest: somata and dendrites drawn on one imaging plane, and the ordered set of them.

Geometry is kept as a list of pixels ``(y, x)`` with a weight each (1 inside a drawn disk or polygon,
the given value for a weighted mask). Pixel ``(y, x)`` is the pixel centre, row ``y``, column ``x`` of
the plane, in *reference* coordinates: the pipeline moves ROIs with the measured brain motion.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np


class RoiKind(enum.StrEnum):
    """What an ROI is drawn on: a soma, or a dendrite of a named soma (recorded, not decoded)."""

    SOMA = "soma"
    DENDRITE = "dendrite"


KINDS = tuple(RoiKind)


class RoiError(ValueError):
    """An ROI (or ROI set) that cannot be used; the message names the ROI and what is wrong."""


@dataclass(frozen=True)
class Roi:
    """One region of interest: identity (name, plane, group, kind, parent soma) and weighted pixels."""

    name: str
    plane: int
    group: str = "none"
    kind: str = RoiKind.SOMA  # a RoiKind; a file's text is checked and made one (below)
    parent: str = ""
    y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), compare=False, repr=False)
    x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), compare=False, repr=False)
    w: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), compare=False, repr=False)
    vertices_yx: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 2), np.float64), compare=False, repr=False
    )  # the hand-drawn polygon, kept so it can be saved and shown again; empty for disks and masks

    def __post_init__(self) -> None:
        if not self.name:
            raise RoiError("an ROI needs a non-empty name")
        if self.kind not in {k.value for k in RoiKind}:
            raise RoiError(f"ROI {self.name!r}: kind {self.kind!r} is not one of {', '.join(RoiKind)}")
        object.__setattr__(self, "kind", RoiKind(self.kind))  # stages compare members
        if self.plane < 0:
            raise RoiError(f"ROI {self.name!r}: plane {self.plane} is negative (planes are 0-based)")
        if self.kind == RoiKind.DENDRITE and not self.parent:
            raise RoiError(f"ROI {self.name!r}: a dendrite needs parent = the name of its soma")
        n = len(self.y)
        if len(self.x) != n or len(self.w) != n:
            raise RoiError(f"ROI {self.name!r}: y, x and w pixel lists differ in length")
        if n == 0 or not np.any(self.w > 0):
            raise RoiError(f"ROI {self.name!r}: empty mask (no pixel with a positive weight)")
        if not np.all(np.isfinite(self.w)) or np.any(self.w < 0):
            raise RoiError(f"ROI {self.name!r}: mask weights must be finite and >= 0")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def disk(
        cls, name: str, plane: int, center_yx: tuple[float, float], radius: float,
        group: str = "none", kind: str = RoiKind.SOMA, parent: str = "",
    ) -> Roi:
        """All pixels whose centre lies within ``radius`` of ``center_yx``."""
        cy, cx = float(center_yx[0]), float(center_yx[1])
        if not radius > 0:
            raise RoiError(f"ROI {name!r}: disk radius {radius} must be > 0")
        ys = np.arange(int(np.floor(cy - radius)), int(np.ceil(cy + radius)) + 1)
        xs = np.arange(int(np.floor(cx - radius)), int(np.ceil(cx + radius)) + 1)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius
        return cls._from_pixels(name, plane, yy[inside], xx[inside], None, group, kind, parent)

    @classmethod
    def polygon(
        cls, name: str, plane: int, vertices_yx: Sequence[Sequence[float]] | np.ndarray,
        group: str = "none", kind: str = RoiKind.SOMA, parent: str = "",
    ) -> Roi:
        """All pixels whose centre lies inside the polygon (even-odd rule), as drawn in CLOOSE."""
        v = np.asarray(vertices_yx, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
            raise RoiError(f"ROI {name!r}: a polygon needs at least 3 (y, x) vertices, got shape {v.shape}")
        ys = np.arange(int(np.floor(v[:, 0].min())), int(np.ceil(v[:, 0].max())) + 1)
        xs = np.arange(int(np.floor(v[:, 1].min())), int(np.ceil(v[:, 1].max())) + 1)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        inside = _inside_polygon(yy.ravel().astype(float), xx.ravel().astype(float), v).reshape(yy.shape)
        roi = cls._from_pixels(name, plane, yy[inside], xx[inside], None, group, kind, parent, v)
        return roi

    @classmethod
    def mask(
        cls, name: str, plane: int, weights: np.ndarray,
        group: str = "none", kind: str = RoiKind.SOMA, parent: str = "",
    ) -> Roi:
        """A weighted pixel mask the size of the plane; pixels with weight 0 are outside the ROI."""
        wts = np.asarray(weights, dtype=np.float64)
        if wts.ndim != 2:
            raise RoiError(f"ROI {name!r}: mask weights must be a 2-D (height, width) array, got {wts.shape}")
        if not np.all(np.isfinite(wts)) or np.any(wts < 0):
            raise RoiError(f"ROI {name!r}: mask weights must be finite and >= 0")
        yy, xx = np.nonzero(wts > 0)
        return cls._from_pixels(name, plane, yy, xx, wts[yy, xx], group, kind, parent)

    @classmethod
    def _from_pixels(
        cls, name: str, plane: int, y: np.ndarray, x: np.ndarray, w: np.ndarray | None,
        group: str, kind: str, parent: str, vertices: np.ndarray | None = None,
    ) -> Roi:
        weights = np.ones(len(y), np.float32) if w is None else np.asarray(w, np.float32)
        return cls(
            name=name, plane=int(plane), group=group, kind=kind, parent=parent,
            y=np.asarray(y, np.int32), x=np.asarray(x, np.int32), w=weights,
            vertices_yx=np.zeros((0, 2)) if vertices is None else np.asarray(vertices, np.float64),
        )

    # ------------------------------------------------------------------ geometry
    def moved(self, dy: float, dx: float) -> Roi:
        """The same ROI displaced by (dy, dx) px: a polygon is moved exactly and redrawn, pixel masks by
        the nearest whole pixel (a mask has no finer geometry to move)."""
        if len(self.vertices_yx):
            vertices = self.vertices_yx + np.array([dy, dx])
            return Roi.polygon(self.name, self.plane, vertices, self.group, self.kind, self.parent)
        iy, ix = round(dy), round(dx)
        return dataclasses.replace(self, y=(self.y + iy).astype(np.int32), x=(self.x + ix).astype(np.int32))

    @property
    def centroid_yx(self) -> tuple[float, float]:
        """Weighted centre of mass (y, x) in pixels."""
        wsum = float(self.w.sum())
        return float((self.y * self.w).sum() / wsum), float((self.x * self.w).sum() / wsum)

    @property
    def npix(self) -> int:
        """Number of pixels with a positive weight."""
        return int(np.count_nonzero(self.w > 0))


def _inside_polygon(py: np.ndarray, px: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Even-odd ray casting along +x for many points at once."""
    inside = np.zeros(len(py), bool)
    y0, x0 = v[:, 0], v[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    for a_y, a_x, b_y, b_x in zip(y0, x0, y1, x1, strict=True):
        if a_y == b_y:
            continue  # horizontal edges never cross a horizontal ray
        crosses = (a_y > py) != (b_y > py)
        x_at = a_x + (py - a_y) * (b_x - a_x) / (b_y - a_y)
        inside ^= crosses & (px < x_at)
    return inside


class RoiSet(Sequence[Roi]):
    """An ordered set of ROIs; the order is the order of F, F0 and dF/F in every readout."""

    def __init__(self, rois: Iterable[Roi] = ()) -> None:
        self._rois: tuple[Roi, ...] = tuple(rois)
        seen: set[str] = set()
        for roi in self._rois:
            if roi.name in seen:
                raise RoiError(f"ROI {roi.name!r} appears twice; ROI names must be unique")
            seen.add(roi.name)
        for roi in self._rois:
            if roi.kind == RoiKind.DENDRITE and roi.parent not in seen:
                raise RoiError(f"ROI {roi.name!r}: parent soma {roi.parent!r} is not in the ROI set")

    def __len__(self) -> int:
        return len(self._rois)

    def __iter__(self) -> Iterator[Roi]:
        return iter(self._rois)

    @overload
    def __getitem__(self, i: int) -> Roi: ...
    @overload
    def __getitem__(self, i: slice) -> RoiSet: ...
    def __getitem__(self, i: int | slice) -> Roi | RoiSet:
        if isinstance(i, slice):
            return RoiSet(self._rois[i])
        return self._rois[i]

    def __repr__(self) -> str:
        return f"RoiSet({len(self)} ROIs: {', '.join(self.names[:6])}{' ...' if len(self) > 6 else ''})"

    @property
    def names(self) -> list[str]:
        """ROI names in order."""
        return [r.name for r in self._rois]

    @property
    def groups(self) -> list[str]:
        """Group of each ROI, in order."""
        return [r.group for r in self._rois]

    def index(self, name: object, start: int = 0, stop: int | None = None) -> int:
        """Position of the ROI called ``name``; RoiError if there is none."""
        for i, roi in enumerate(self._rois):
            if roi.name == name:
                return i
        raise RoiError(f"no ROI named {name!r} (known: {', '.join(self.names) or 'none'})")

    def indices(self, group: str | None = None, kind: str | None = None, plane: int | None = None) -> np.ndarray:
        """Positions (int array) of the ROIs matching every given criterion."""
        return np.array(
            [
                i for i, r in enumerate(self._rois)
                if (group is None or r.group == group)
                and (kind is None or r.kind == kind)
                and (plane is None or r.plane == plane)
            ],
            dtype=np.intp,
        )

    def moved(self, dy: float, dx: float) -> RoiSet:
        """Every ROI displaced by (dy, dx) px (e.g. yesterday's ROIs onto today's field, see
        :func:`bcirig.processing.registration.align_fov`)."""
        return RoiSet(r.moved(dy, dx) for r in self._rois)

    def validate(self, frame_shape: tuple[int, int, int]) -> None:
        """Check every ROI fits a (planes, height, width) frame; RoiError naming the first that does not."""
        planes, height, width = frame_shape
        for r in self._rois:
            if r.plane >= planes:
                raise RoiError(f"ROI {r.name!r}: plane {r.plane} out of range (the frame has {planes} plane(s))")
            out = (r.y < 0) | (r.y >= height) | (r.x < 0) | (r.x >= width)
            if np.any(out):
                what = "polygon" if len(r.vertices_yx) else "mask"
                raise RoiError(
                    f"ROI {r.name!r}: {what} lies (partly) outside the {height}x{width} frame: "
                    f"{int(out.sum())} of {len(r.y)} pixels, y in [{r.y.min()}, {r.y.max()}], "
                    f"x in [{r.x.min()}, {r.x.max()}]"
                )

    # ------------------------------------------------------------------ storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the set, as numeric / fixed-width-bytes arrays (HDF5 datasets)."""
        n = len(self._rois)
        counts = [len(r.y) for r in self._rois]
        vcounts = [len(r.vertices_yx) for r in self._rois]

        def text(values: list[str]) -> np.ndarray:
            encoded = [v.encode("utf-8") for v in values]
            width = max([1, *(len(e) for e in encoded)])
            return np.array(encoded, dtype=f"S{width}")

        return {
            "name": text(self.names),
            "plane": np.array([r.plane for r in self._rois], np.int32),
            "group": text(self.groups),
            "kind": text([r.kind for r in self._rois]),
            "parent": text([r.parent for r in self._rois]),
            "pix_roi": np.repeat(np.arange(n, dtype=np.int32), counts),
            "pix_plane": np.repeat(np.array([r.plane for r in self._rois], np.int32), counts),
            "pix_y": np.concatenate([r.y for r in self._rois]) if n else np.zeros(0, np.int32),
            "pix_x": np.concatenate([r.x for r in self._rois]) if n else np.zeros(0, np.int32),
            "pix_w": np.concatenate([r.w for r in self._rois]) if n else np.zeros(0, np.float32),
            "vert_roi": np.repeat(np.arange(n, dtype=np.int32), vcounts),
            "vert_yx": (np.concatenate([r.vertices_yx for r in self._rois]) if n else np.zeros((0, 2)))
            .astype(np.float64).reshape(-1, 2),
        }

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> RoiSet:
        """Inverse of :meth:`to_arrays` (exact round trip)."""

        def text(a: np.ndarray) -> list[str]:
            return [bytes(v).decode("utf-8") for v in np.asarray(a)]

        names, groups, kinds, parents = (text(d[k]) for k in ("name", "group", "kind", "parent"))
        planes = np.asarray(d["plane"])
        pix_roi, vert_roi = np.asarray(d["pix_roi"]), np.asarray(d["vert_roi"])
        rois = []
        for i, name in enumerate(names):
            sel, vsel = pix_roi == i, vert_roi == i
            rois.append(
                Roi(
                    name=name, plane=int(planes[i]), group=groups[i], kind=kinds[i], parent=parents[i],
                    y=np.asarray(d["pix_y"])[sel].astype(np.int32),
                    x=np.asarray(d["pix_x"])[sel].astype(np.int32),
                    w=np.asarray(d["pix_w"])[sel].astype(np.float32),
                    vertices_yx=np.asarray(d["vert_yx"]).reshape(-1, 2)[vsel].astype(np.float64),
                )
            )
        return cls(rois)
