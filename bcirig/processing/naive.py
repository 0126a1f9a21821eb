"""The straightforward NumPy implementation that ``bcirig bench`` measures bcirig against.

Written the way a first working version usually is, and not slowed on purpose: ``numpy.fft.fft2``
phase correlation (integer peak plus a parabolic sub-pixel fit), the frame rolled back onto the
reference, dense ROI and neuropil masks multiplied with the whole frame, and ``np.percentile`` over the
F0 window recomputed every frame. Same science as :class:`~bcirig.processing.Pipeline` (same ROIs,
annuli, neuropil coefficient, F0 window and two-population readout), so the ratio is like for like.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from bcirig.processing.extraction import neuropil_annuli
from bcirig.processing.rois import RoiSet


class NaivePipeline:
    """Frame -> two-population readout, plainly."""

    def __init__(
        self, rois: RoiSet, reference: np.ndarray, *, window: int, percentile: float = 10.0,
        coefficient: float = 0.7, inner: float = 2.0, outer: float = 12.0, smooth: int = 3,
    ) -> None:
        _, h, w = reference.shape
        self.shape = (h, w)
        self.ref_conj = np.conj(np.fft.fft2(reference[0]))
        self.masks = np.zeros((len(rois), h * w), np.float32)
        self.np_masks = np.zeros((len(rois), h * w), np.float32)
        for i, (r, (ny, nx)) in enumerate(zip(rois, neuropil_annuli(rois, (1, h, w), inner, outer), strict=True)):
            self.masks[i, r.y * w + r.x] = r.w / r.w.sum()
            self.np_masks[i, ny * w + nx] = 1.0 / len(ny)
        self.plus = rois.indices(group="P+")
        self.minus = rois.indices(group="P-")
        self.window: deque[np.ndarray] = deque(maxlen=window)
        self.recent: deque[float] = deque(maxlen=smooth)
        self.percentile, self.coefficient = percentile, coefficient

    def shift(self, plane: np.ndarray) -> tuple[float, float]:
        """Phase correlation peak (dy, dx) with a parabolic sub-pixel fit along each axis."""
        cross = np.fft.fft2(plane) * self.ref_conj
        corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
        iy, ix = np.unravel_index(np.argmax(corr), corr.shape)
        h, w = self.shape

        def vertex(m: float, c: float, p: float) -> float:
            d = m - 2 * c + p
            return 0.5 * (m - p) / d if d != 0 else 0.0

        fy = vertex(corr[(iy - 1) % h, ix], corr[iy, ix], corr[(iy + 1) % h, ix])
        fx = vertex(corr[iy, (ix - 1) % w], corr[iy, ix], corr[iy, (ix + 1) % w])
        dy = iy - h if iy > h // 2 else iy
        dx = ix - w if ix > w // 2 else ix
        return dy + fy, dx + fx

    def process(self, frame: np.ndarray) -> float:
        """Smoothed readout of one (1, H, W) frame."""
        plane = frame[0].astype(np.float32)
        dy, dx = self.shift(plane)
        moved = np.roll(plane, (-round(dy), -round(dx)), axis=(0, 1))
        f = self.masks @ moved.ravel()
        npl = self.np_masks @ moved.ravel()
        fc = f - self.coefficient * npl
        self.window.append(fc)
        f0 = np.percentile(np.array(self.window), self.percentile, axis=0)
        dff = (fc - f0) / f0
        self.recent.append(float(dff[self.plus].mean() - dff[self.minus].mean()))
        return float(np.mean(self.recent))
