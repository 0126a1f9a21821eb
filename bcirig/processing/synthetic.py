"""Synthetic two-photon movies with known motion, for benchmarks and tests.

A scene larger than the field of view (smooth neuropil-like background plus round cells) is moved
by a known subpixel shift (exact Fourier shift) and cropped, so frame edges do not wrap; photons are
Poisson, converted to uint16 with a gain and an offset like a PMT/digitiser chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from bcirig.processing.rois import Roi, RoiSet


@dataclass
class Movie:
    """Frames (T, 1, H, W) uint16, the ROIs on the cells, the noise-free reference and the true shifts."""

    frames: np.ndarray
    rois: RoiSet
    reference: np.ndarray  # (1, H, W) float32, in the same units as the frames
    shifts: np.ndarray  # (T, 2) true (dy, dx): frame(y, x) = reference(y - dy, x - dx)


def cell_centres(n: int, height: int, width: int, rng: np.random.Generator, margin: int = 24) -> np.ndarray:
    """``n`` cell centres on a jittered grid, at least ~12 px apart and ``margin`` px from the edges."""
    area = (height - 2 * margin) * (width - 2 * margin)
    step = max(12.0, np.sqrt(area / max(n, 1)))
    ys = np.arange(margin, height - margin, step)
    xs = np.arange(margin, width - margin, step)
    grid = np.array([(y, x) for y in ys for x in xs], float)
    if len(grid) < n:
        raise ValueError(f"cannot place {n} cells {step:.0f} px apart in {height}x{width}")
    pick = grid[rng.choice(len(grid), n, replace=False)]
    centres: np.ndarray = pick + rng.uniform(-0.2, 0.2, pick.shape) * min(step - 10, 6)
    return centres


def make_movie(
    n_frames: int, height: int, width: int, n_rois: int, *, max_shift: float = 20.0, seed: int = 0,
    background_photons: float = 10.0, cell_photons: float = 40.0, gain: float = 20.0, offset: float = 100.0,
    shifts: np.ndarray | None = None,
) -> Movie:
    """A movie with ``n_rois`` cells (ROIs in groups P+/P- alternately) moving within +-``max_shift`` px
    (uniformly at random, or by the given (n_frames, 2) ``shifts``)."""
    rng = np.random.default_rng(seed)
    pad = int(np.ceil(max_shift)) + 8
    ch, cw = height + 2 * pad, width + 2 * pad
    k = np.hypot(np.fft.fftfreq(ch)[:, None], np.fft.fftfreq(cw)[None, :])
    bg = sfft.ifft2(sfft.fft2(rng.standard_normal((ch, cw))) * np.exp(-2 * (np.pi * 4.0 * k) ** 2)).real
    bg = background_photons * (0.5 + (bg - bg.min()) / (bg.max() - bg.min()))
    centres = cell_centres(n_rois, height, width, rng)
    yy, xx = np.mgrid[:ch, :cw]
    cells = np.zeros((ch, cw))
    for cy, cx in centres:  # each cell only touches its neighbourhood: render it there
        y0, x0 = int(cy) + pad - 8, int(cx) + pad - 8
        sub = (slice(y0, y0 + 17), slice(x0, x0 + 17))
        r2 = (yy[sub] - cy - pad) ** 2 + (xx[sub] - cx - pad) ** 2
        cells[sub] += np.exp(-r2 / (2 * 3.0**2))
    bg_f, cells_f = sfft.rfft2(bg), sfft.rfft2(cells)
    ky, kx = np.fft.fftfreq(ch)[:, None], np.fft.rfftfreq(cw)[None, :]
    if shifts is None:
        shifts = rng.uniform(-max_shift, max_shift, (n_frames, 2))
    activity = 1.0 + rng.gamma(0.5, 1.0, n_frames)  # transients on top of the resting level
    frames = np.empty((n_frames, 1, height, width), np.uint16)
    crop = (slice(pad, pad + height), slice(pad, pad + width))
    for t, (dy, dx) in enumerate(shifts):
        phase = np.exp(-2j * np.pi * (ky * dy + kx * dx))
        scene = sfft.irfft2((bg_f + cell_photons * activity[t] * cells_f) * phase, s=(ch, cw))[crop]
        photons = rng.poisson(np.clip(scene, 0, None))
        frames[t, 0] = np.clip(offset + gain * photons + rng.normal(0, 2.0, photons.shape), 0, 65535)
    reference = (offset + gain * (bg + cell_photons * 1.5 * cells)[crop]).astype(np.float32)[None]
    rois = RoiSet(
        Roi.disk(f"cell{i:03d}", 0, (float(cy), float(cx)), 5.0, group="P+" if i % 2 == 0 else "P-")
        for i, (cy, cx) in enumerate(centres)
    )
    return Movie(frames=frames, rois=rois, reference=reference, shifts=shifts)
