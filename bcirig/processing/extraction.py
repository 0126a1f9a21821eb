"""ROI fluorescence and neuropil through precomputed sparse operators that move with the brain.

Each frame is copied once into a float32 buffer padded by ``margin`` pixels on every side (edges
replicated, so an ROI moved past the border reads the border pixel). ROI pixels are columns of a CSR
matrix indexed in *frame* coordinates; reading the frame moved by an integer shift ``(iy, ix)`` is then
just the same matrix applied to the flat buffer starting ``(margin + iy) * padded_width + margin + ix``
elements later — no index arithmetic per frame and no interpolation of the frame.

* F: weighted mean of the ROI's pixels (sum of weight x pixel / sum of weights), sampled at the
  subpixel shift by bilinear weights (four products of the small ROI operator, one per neighbouring
  integer shift).
* neuropil: mean of an annulus ``inner < distance to the ROI <= outer`` (pixels) that excludes the
  pixels of every ROI on that plane, read at the nearest integer shift (the annulus is wide and smooth,
  so a sub-pixel move changes it by far less than its noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from bcirig.processing.kernels import checked_kernel
from bcirig.processing.rois import Roi, RoiError, RoiSet

MatVec = Callable[..., None]


def _load_csr_matvec() -> MatVec:
    # scipy's own CSR kernel, called without the ~7 us of dispatch that `op @ x` adds per product
    from scipy.sparse._sparsetools import csr_matvec

    matvec: MatVec = csr_matvec
    return matvec


def _csr_matvec_agrees(matvec: MatVec) -> bool:
    """The private call in :func:`_product` gives exactly ``op @ x`` on a small float32 operator."""
    rng = np.random.default_rng(0)
    op = sp.random(5, 40, density=0.3, format="csr", dtype=np.float32, random_state=rng)
    x = rng.standard_normal(40).astype(np.float32)
    y = np.zeros(5, np.float32)
    matvec(5, 40, op.indptr, op.indices, op.data, x, y)
    return bool(np.array_equal(y, op @ x))


_CSR_MATVEC = checked_kernel("sparsetools csr_matvec", _load_csr_matvec, _csr_matvec_agrees)


def _product(op: sp.csr_matrix, private_kernel: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> op @ x`` (float32) with as little per-call overhead as possible."""
    matvec = _CSR_MATVEC if private_kernel else None
    if matvec is None:
        return lambda x: op @ x
    n_row, n_col = op.shape
    indptr, indices, data = op.indptr, op.indices, op.data

    def product(x: np.ndarray) -> np.ndarray:
        y = np.zeros(n_row, np.float32)
        matvec(n_row, n_col, indptr, indices, data, x, y)  # y += op @ x
        return y

    return product


def neuropil_pixels(
    roi: Roi, occupied: np.ndarray, inner: float, outer: float
) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of the annulus around ``roi`` on its plane; ``occupied`` marks every ROI pixel of the plane."""
    height, width = occupied.shape
    pad = int(np.ceil(outer)) + 1
    y0, y1 = max(0, int(roi.y.min()) - pad), min(height, int(roi.y.max()) + pad + 1)
    x0, x1 = max(0, int(roi.x.min()) - pad), min(width, int(roi.x.max()) + pad + 1)
    inside = np.zeros((y1 - y0, x1 - x0), bool)
    inside[roi.y - y0, roi.x - x0] = True
    dist = ndi.distance_transform_edt(~inside)
    ring = (dist > inner) & (dist <= outer) & ~occupied[y0:y1, x0:x1]
    yy, xx = np.nonzero(ring)
    if len(yy) == 0:
        raise RoiError(
            f"ROI {roi.name!r}: its neuropil annulus ({inner}-{outer} px) has no pixel free of other ROIs; "
            "widen readout.neuropil_outer_px"
        )
    return yy + y0, xx + x0


def neuropil_annuli(
    rois: Iterable[Roi], frame_shape: tuple[int, int, int], inner: float, outer: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(y, x) of every ROI's neuropil annulus, in order: each excludes the (weighted) pixels of every ROI
    on its plane. The one definition the pipeline, the simulator's traces level and the NumPy baseline use."""
    rois = list(rois)
    occupied = np.zeros(frame_shape, bool)
    for r in rois:
        occupied[r.plane, r.y[r.w > 0], r.x[r.w > 0]] = True
    return [neuropil_pixels(r, occupied[r.plane], inner, outer) for r in rois]


class Extractor:
    """F and neuropil of every ROI (RoiSet order) from one frame, for one shift per ROI group."""

    def __init__(
        self, rois: RoiSet, frame_shape: tuple[int, int, int], margin: int,
        neuropil_inner: float, neuropil_outer: float, groups: list[np.ndarray] | None = None,
        *, private_kernels: bool = True,
    ) -> None:
        """``private_kernels=False`` uses the public ``op @ x`` even where SciPy's private kernel passed its
        check (:mod:`bcirig.processing.kernels`); the results are the same."""
        rois.validate(frame_shape)
        planes, height, width = frame_shape
        self.n = len(rois)
        self.shape = frame_shape
        self.margin = m = int(margin) + 1  # +1: bilinear sampling reads one pixel beyond the shift
        self.hp, self.wp = height + 2 * m, width + 2 * m
        self.buf = np.zeros((planes, self.hp, self.wp), np.float32)
        self._flat = self.buf.reshape(-1)
        self._length = planes * self.hp * self.wp - 2 * m * self.wp - 2 * m
        annuli = neuropil_annuli(rois, frame_shape, neuropil_inner, neuropil_outer)
        roi_rows = [(self._columns(r.plane, r.y, r.x), r.w) for r in rois]
        np_rows = [(self._columns(r.plane, ny, nx), np.ones(len(ny))) for r, (ny, nx) in zip(rois, annuli, strict=True)]
        self.groups = groups if groups is not None else [np.arange(self.n)]
        self._roi_ops = [self._operator([roi_rows[i] for i in g]) for g in self.groups]
        self._np_ops = [self._operator([np_rows[i] for i in g]) for g in self.groups]
        self.neuropil_npix = np.array([len(c) for c, _ in np_rows])
        # sums of unit weights are exact in float32, so a flat ROI of 100 reads exactly 100
        self._roi_prod = [_product(op, private_kernels) for op in self._roi_ops]
        self._np_prod = [_product(op, private_kernels) for op in self._np_ops]
        self._roi_norm = [np.array([roi_rows[i][1].sum() for i in g], np.float32) for g in self.groups]
        self._np_norm = [self.neuropil_npix[g].astype(np.float32) for g in self.groups]

    def _columns(self, plane: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return plane * self.hp * self.wp + y.astype(np.int64) * self.wp + x.astype(np.int64)

    def _operator(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> sp.csr_matrix:
        # int32 indices when they fit: the product is memory-bound, and this halves the index traffic
        itype = np.int32 if self._length < 2**31 else np.int64
        indptr = np.cumsum([0] + [len(c) for c, _ in rows]).astype(itype)
        cols = (np.concatenate([c for c, _ in rows]) if rows else np.zeros(0)).astype(itype)
        vals = np.concatenate([v for _, v in rows]).astype(np.float32) if rows else np.zeros(0, np.float32)
        op = sp.csr_matrix((vals, cols, indptr), shape=(len(rows), self._length))
        op.sort_indices()  # reading pixels in memory order is faster and fixes the summation order
        return op

    def load(self, frame: np.ndarray) -> None:
        """Copy a (planes, H, W) frame into the padded float32 buffer, replicating its edges."""
        m, b = self.margin, self.buf
        _, height, width = self.shape
        b[:, m : m + height, m : m + width] = frame
        b[:, :m, m : m + width] = b[:, m : m + 1, m : m + width]
        b[:, m + height :, m : m + width] = b[:, m + height - 1 : m + height, m : m + width]
        b[:, :, :m] = b[:, :, m : m + 1]
        b[:, :, m + width :] = b[:, :, m + width - 1 : m + width]

    def _view(self, iy: int, ix: int) -> np.ndarray:
        off = (self.margin + iy) * self.wp + self.margin + ix
        return self._flat[off : off + self._length]

    def extract(self, shifts: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
        """(F, neuropil) float32 per ROI from the loaded frame; one (dy, dx) per group, |shift| < margin."""
        f = np.empty(self.n, np.float32)
        npl = np.empty(self.n, np.float32)
        lim = self.margin - 1
        for k, (g, roi_op, np_op) in enumerate(zip(self.groups, self._roi_prod, self._np_prod, strict=True)):
            dy, dx = shifts[k]
            dy, dx = min(max(dy, -lim), lim), min(max(dx, -lim), lim)
            iy, ix = math.floor(dy), math.floor(dx)
            fy, fx = np.float32(dy - iy), np.float32(dx - ix)
            acc = roi_op(self._view(iy, ix)) * ((1 - fy) * (1 - fx))
            if fx:
                acc += roi_op(self._view(iy, ix + 1)) * ((1 - fy) * fx)
            if fy:
                acc += roi_op(self._view(iy + 1, ix)) * (fy * (1 - fx))
                if fx:
                    acc += roi_op(self._view(iy + 1, ix + 1)) * (fy * fx)
            f[g] = acc / self._roi_norm[k]
            npl[g] = np_op(self._view(round(dy), round(dx))) / self._np_norm[k]
        return f, npl
