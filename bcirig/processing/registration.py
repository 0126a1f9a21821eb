"""Rigid subpixel motion estimation by upsampled DFT cross-correlation (Guizar-Sicairos et al. 2008).

Convention: ``shift = (dy, dx)`` means the frame's content moved by +shift relative to the reference:
``frame(y, x) ~ reference(y - dy, x - dx)``. A structure drawn at ``(y, x)`` on the reference is found
at ``(y + dy, x + dx)`` in the frame, which is how the pipeline moves its ROIs (the frame itself is
never interpolated).

How a frame is registered (all float32 / complex64; the reference goes through steps 1-2 once):

1. The (optionally cropped) plane is summed in 2x2 bins into float32 and multiplied by a cosine-edged
   taper, so the image edges do not produce a spurious correlation peak at zero shift.
2. Its real 2-D FFT is the registration *band*: the lowest half of the frequencies on each axis of
   the full-resolution image. Binning weights every frequency of the band by the same real factor
   (and one common phase) in frame and reference, and a symmetric band limit does not move the
   correlation peak; it removes most shot noise and makes every FFT 4x smaller. The tapered mean is
   removed (DC and its leakage), which is the same as subtracting both images' means.
3. Cross-power with the reference band's conjugate; the inner half of it, inverse-transformed, gives
   the correlation on a ~4-px grid, whose maximum within ``max_shift_px`` is the coarse shift.
4. The correlation is evaluated exactly by matrix-multiply DFT (Guizar-Sicairos' upsampled DFT) on
   0.5-px steps around the coarse shift (inner band), then on 1/``upsample``-px steps over +-0.3 px
   (whole band). Each grid is scored with the taper modelled (below); the best point of the last grid,
   refined by a parabola through it and its neighbours on each axis, is the shift, clamped to
   ``max_shift_px``.
5. Quality ``corr``: the normalised cross-correlation of the band-limited, tapered frame and reference
   at that shift (1 = same image up to shift and gain).

Why the taper is modelled: the correlation at shift ``s`` weighs each pixel pair by ``w(x) w(x - s)``,
both tapers, so the weight of the scene's structure changes with ``s`` as it moves through the tapered
edges. The plain correlation peak is then pulled toward smaller shifts, in proportion to the shift:
-0.55% on the benchmark's movie (up to -0.2 px at 20 px). The unbiased score is the normalised
correlation ``c(s) / sqrt(A(s) B(s))`` (masked NCC), ``A`` and ``B`` the frame's and the reference's
energy under that weight; it peaks exactly at the true shift of a noise-free frame. Near the peak
``log A`` and ``log B`` are linear in ``s``, and their slope comes from the reference alone (``A = B``
at the true shift; the frame's own energy would add its shot noise, which moves with the frame): it is
tabulated once per reference for whole-px shifts (three matrix products, the taper evaluated
analytically at the shifted positions: :func:`taper_at`) and interpolated per frame, so a frame costs
a few scalar operations more. The parabola then takes the estimate below the 1/``upsample`` grid.

Accuracy on 512x512 synthetic two-photon frames (~10 photons/px background, shifts up to +-20 px,
non-periodic): 0.029 px RMS per axis, no bias left (the Cramer-Rao bound of the shot noise is
0.018 px; ``bcirig bench``, section registration).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import scipy.fft as sfft

from bcirig.config import Registration as RegistrationConfig
from bcirig.processing.kernels import checked_kernel

FftKernel = Callable[..., np.ndarray]


def _load_pocketfft() -> tuple[FftKernel, FftKernel]:
    # scipy.fft's own pocketfft kernels, without the ~8 us of argument normalisation per public call
    from scipy.fft._pocketfft.pypocketfft import c2r, r2c

    return r2c, c2r


def _pocketfft_agrees(kernels: tuple[FftKernel, FftKernel]) -> bool:
    """The private calls below give exactly ``scipy.fft.rfft2`` / ``irfft2`` on a small float32 image."""
    r2c, c2r = kernels
    x = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    spectrum, want = r2c(x, (0, 1), True, 0, None, 1), sfft.rfft2(x)
    back = c2r(want, (0, 1), 10, False, 2, None, 1)
    want_back = sfft.irfft2(want, s=x.shape)
    return bool(spectrum.dtype == want.dtype and np.array_equal(spectrum, want)
                and back.dtype == want_back.dtype and np.array_equal(back, want_back))


_POCKETFFT = checked_kernel("pocketfft r2c/c2r", _load_pocketfft, _pocketfft_agrees)


def _rfft2(x: np.ndarray) -> np.ndarray:
    """``scipy.fft.rfft2`` of a 2-D float32 array (the very same kernel call, one thread)."""
    if _POCKETFFT is None:
        return _public_rfft2(x)
    out: np.ndarray = _POCKETFFT[0](x, (0, 1), True, 0, None, 1)  # forward, norm "backward" (none), no out, 1 worker
    return out


def _irfft2(x: np.ndarray, width: int) -> np.ndarray:
    """``scipy.fft.irfft2(x, s=(rows, width))`` of a 2-D complex64 array with ``width // 2 + 1`` columns."""
    if _POCKETFFT is None:
        return _public_irfft2(x, width)
    out: np.ndarray = _POCKETFFT[1](x, (0, 1), width, False, 2, None, 1)  # inverse, norm "backward" (1/n), 1 worker
    return out


def _public_rfft2(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = sfft.rfft2(x)
    return out


def _public_irfft2(x: np.ndarray, width: int) -> np.ndarray:
    out: np.ndarray = sfft.irfft2(x, s=(x.shape[0], width))
    return out


TAPER_EDGE = 0.08  # share of each side over which the taper falls to zero


def taper(height: int, width: int, edge: float = TAPER_EDGE) -> np.ndarray:
    """Separable window: 1 in the middle, raised-cosine fall-off over ``edge`` of each side."""

    def ramp(n: int) -> np.ndarray:
        m = max(1, round(edge * n))
        w = np.ones(n)
        r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
        w[:m], w[n - m :] = r, r[::-1]
        return w

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def taper_at(n: int, pos: np.ndarray, edge: float = TAPER_EDGE) -> tuple[np.ndarray, np.ndarray]:
    """One axis of :func:`taper` (length ``n``) at real positions ``pos``, periodic, and its derivative.

    At whole positions it is the sampled taper; between them the raised cosine itself. Periodic because
    the correlation is circular: a shifted window wraps.
    """
    m = max(1, round(edge * n))
    p = np.mod(pos + 0.5, n) - 0.5  # in [-0.5, n - 0.5)
    left = p <= n - 1 - p
    d = np.where(left, p, n - 1 - p)  # position counted from the nearer edge
    u = np.clip((d + 0.5) / m, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * u)
    dw = np.where((u > 0) & (u < 1), (0.5 * np.pi / m) * np.sin(np.pi * u), 0.0)
    return w, np.where(left, dw, -dw)


def crop_window(height: int, width: int, crop: int) -> tuple[slice, slice]:
    """Centred crop of side ``crop`` (0 or larger than the plane: the whole plane), trimmed so that the
    2x2-binned window's sides are FFT-friendly (factors 2, 3 and 5 only: see :func:`fast_side`)."""
    ch, cw = (min(crop, height), min(crop, width)) if crop > 0 else (height, width)
    ch, cw = 2 * fast_side(ch // 2), 2 * fast_side(cw // 2)
    y0, x0 = (height - ch) // 2, (width - cw) // 2
    return slice(y0, y0 + ch), slice(x0, x0 + cw)


def fast_side(n: int) -> int:
    """The largest length <= ``n`` with no prime factor above 5.

    CLOOSE's 796-pixel lines bin to 398 = 2 x 199, and an FFT of a prime factor 199 is done the slow way
    (Bluestein): registering 512 x 796 took 3.5x as long as 512 x 512. Dropping the outer 14 columns
    (binned: 398 -> 384 = 2^7 x 3) loses nothing a shift estimate needs and restores the speed.
    """
    for m in range(max(1, n), 0, -1):
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
    return 1


class RigidRegistration:
    """Registers planes of one size against one reference plane (whose spectrum is computed once)."""

    def __init__(self, reference: np.ndarray, cfg: RegistrationConfig, *, private_kernels: bool = True) -> None:
        """``private_kernels=False`` uses the public ``scipy.fft`` functions even where the private ones passed
        their check (:mod:`bcirig.processing.kernels`); the results are the same."""
        self._rfft2: Callable[[np.ndarray], np.ndarray] = _rfft2 if private_kernels else _public_rfft2
        self._irfft2: Callable[[np.ndarray, int], np.ndarray] = _irfft2 if private_kernels else _public_irfft2
        ref = np.asarray(reference, np.float32)
        if ref.ndim != 2:
            raise ValueError(f"reference plane must be 2-D, got shape {ref.shape}")
        self.cfg = cfg
        self.window = crop_window(ref.shape[0], ref.shape[1], cfg.crop)
        ref = ref[self.window]
        h, w = ref.shape
        self.shape = (h, w)
        # the band is the whole spectrum of the 2x2-binned image: rows ky in [-by/2, by/2), columns
        # kx in [0, bx). Binning filters every frequency of the band by the same real weight (and one
        # common phase) in frame and reference, so the cross-correlation peak does not move.
        self.by = h // 2
        self.bx = (w // 2) // 2 + 1
        self.taper = taper(self.by, w // 2)
        self._buf = np.empty((self.by, w // 2), np.float32)
        self._rows = np.empty((self.by, 2 * (w // 2)), np.float32)
        ky = np.fft.fftfreq(self.by, 1.0 / self.by).astype(np.float64)  # 0..by/2-1, -by/2..-1
        kx = np.arange(self.bx, dtype=np.float64)
        self._ky, self._kx = ky, kx
        # half-spectrum weights: each kx > 0 stands for itself and its conjugate at -kx
        self._wx = np.where(kx == 0, 1.0, 2.0).astype(np.float32)
        self._taper_band = self._band(self.taper)
        ref_sums = self._bin(ref, tapered=False).astype(np.float64)
        self._ref_band = self._demean(self._band(self._bin(ref).copy()))
        self._ref_conj = np.conj(self._ref_band)
        self._ref_energy = self._energy(self._ref_band)
        lim = min(cfg.max_shift_px, h / 2 - 1, w / 2 - 1)
        self.max_shift = float(max(0.0, lim))
        # coarse search: the inner half of the band again, inverse-transformed to a ~4-px grid
        self._cy_n, self._cx_n = max(2, (self.by // 4) * 2), max(2, (self.bx - 1) // 2 + 1)
        ny, nx = self._cy_n, 2 * (self._cx_n - 1)
        step_y, step_x = h / ny, w / nx
        self._coarse_y = np.fft.fftfreq(ny, 1.0 / ny) * step_y
        self._coarse_x = np.fft.fftfreq(nx, 1.0 / nx) * step_x
        allowed = (np.abs(self._coarse_y)[:, None] <= self.max_shift + step_y) & (
            np.abs(self._coarse_x)[None, :] <= self.max_shift + step_x
        )
        self._coarse_mask = np.where(allowed, 0.0, -np.inf).astype(np.float32)
        # the taper model's slope, tabulated on a 1-px grid of shifts reaching every grid point searched
        self._slope_reach = int(np.ceil(self.max_shift + max(step_y, step_x))) + 2
        self._slope_y, self._slope_x = self._taper_slopes(ref_sums, self._slope_reach)
        self._coarse_rows = np.r_[0 : ny // 2, self.by - ny // 2 : self.by]
        self._ky_inner = self._ky[self._coarse_rows]
        # then two exact refinements: 0.5 px steps over the coarse cell using the inner band (the
        # correlation is smooth there), and 1/upsample px over +-0.3 px using the whole band
        half = int(np.ceil(max(step_y, step_x) / 2)) + 1
        self._grid1 = np.arange(-2 * half, 2 * half + 1, dtype=np.float64) / 2
        u = max(1, cfg.upsample)
        k = int(np.ceil(0.3 * u))
        self._grid2 = np.arange(-k, k + 1, dtype=np.float64) / u if u > 1 else np.zeros(1)
        # phase matrices of the grids, computed once; a frame only adds its centre's phase ramp
        nx1 = self._cx_n
        self._stage1 = (
            np.exp((2j * np.pi / h) * np.outer(self._grid1, self._ky_inner)).astype(np.complex64),
            (np.exp((2j * np.pi / w) * np.outer(self._kx[:nx1], self._grid1)) * self._wx[:nx1, None]).astype(
                np.complex64
            ),
            self._ky_inner, self._kx[:nx1],
        )
        self._stage2 = (
            np.exp((2j * np.pi / h) * np.outer(self._grid2, self._ky)).astype(np.complex64),
            (np.exp((2j * np.pi / w) * np.outer(self._kx, self._grid2)) * self._wx[:, None]).astype(np.complex64),
            self._ky, self._kx,
        )

    # ---------------------------------------------------------------- spectra
    def _bin(self, img: np.ndarray, tapered: bool = True) -> np.ndarray:
        """2x2 sums of ``img`` (odd last row/column dropped), times the taper if ``tapered``, in the float32 buffer."""
        b, h2, w2 = self._buf, self.by, self.taper.shape[1]
        rows = self._rows  # pairs of whole rows first: contiguous reads
        np.add(img[0 : 2 * h2 : 2, : 2 * w2], img[1 : 2 * h2 : 2, : 2 * w2], out=rows, dtype=np.float32)
        np.add(rows[:, 0::2], rows[:, 1::2], out=b)
        if tapered:
            b *= self.taper
        return b

    def _band(self, binned: np.ndarray) -> np.ndarray:
        """Spectrum (by, bx) of a binned, tapered float32 image: the registration band."""
        return self._rfft2(binned).astype(np.complex64, copy=False)

    def _demean(self, band: np.ndarray) -> np.ndarray:
        """Remove the tapered mean: subtract mean * spectrum(taper), so DC and its leakage vanish."""
        out: np.ndarray = band - (band[0, 0] / self._taper_band[0, 0]) * self._taper_band
        return out

    def _energy(self, band: np.ndarray) -> float:
        """Sum of wx * |band|^2 (every column but kx = 0 stands for two)."""
        col0 = band[:, 0]
        return float(2 * np.vdot(band, band).real - np.vdot(col0, col0).real)

    # ---------------------------------------------------------------- registration
    def register(self, plane: np.ndarray) -> tuple[float, float, float]:
        """Estimate (dy, dx, corr) of one plane (any real dtype, full plane size)."""
        band = self._demean(self._band(self._bin(plane[self.window])))
        cross = band * self._ref_conj
        inner = cross[self._coarse_rows, : self._cx_n]
        coarse = self._irfft2(inner, 2 * (self._cx_n - 1)) + self._coarse_mask
        iy, ix = divmod(int(coarse.argmax()), coarse.shape[1])
        y0, x0 = float(self._coarse_y[iy]), float(self._coarse_x[ix])
        y1, x1, _, _ = self._refine(inner, y0, x0, self._grid1, self._stage1)
        dy, dx, peak, edge = self._refine(cross, y1, x1, self._grid2, self._stage2, final=True)
        if edge:  # the best point is on the grid's rim: the peak may lie beyond it; look around it once more
            dy, dx, peak, _ = self._refine(cross, dy, dx, self._grid2, self._stage2, final=True)
        lim = self.max_shift
        dy, dx = min(max(dy, -lim), lim), min(max(dx, -lim), lim)
        energy = self._energy(band) * self._ref_energy
        return dy, dx, peak / math.sqrt(energy) if energy > 0 else 0.0

    def _taper_slopes(self, sums: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
        """Gradient of 0.5 log(A B) (per px of shift; module docstring) at whole-px shifts -reach..reach.

        ``B(t) = sum E(x) w(x) w(x + t)`` over the reference's energy map ``E`` (its binned pixels,
        demeaned as the band is, squared); at the true shift A's slope mirrors B's, so the gradient of
        0.5 (log A + log B) is ``sum E(x) [w(x) w'(x + t) - w'(x) w(x + t)] / (2 B)`` on each axis. The
        window is separable, so every table is a product of three matrices. Returns (y, x) tables
        indexed [dy + reach, dx + reach].
        """
        mean = float((sums * self.taper).sum() / self.taper.sum())
        energy = (sums - mean) ** 2
        t = 0.5 * np.arange(-reach, reach + 1, dtype=np.float64)  # shifts in binned pixels

        def weights(n: int) -> tuple[np.ndarray, np.ndarray]:
            pos = np.arange(n, dtype=np.float64)
            w0, dw0 = taper_at(n, pos)
            w, dw = taper_at(n, pos[None, :] + t[:, None])
            return w0 * w, w0 * dw - dw0 * w  # (shifts, n): w(x) w(x + t) and its antisymmetric slope

        py, qy = weights(energy.shape[0])
        px, qx = weights(energy.shape[1])
        e_px, e_qx = energy @ px.T, energy @ qx.T
        b = py @ e_px
        scale = np.divide(0.25, b, out=np.zeros_like(b), where=b > 0)  # 1/2 for A + B, 1/2 binned -> px
        return (qy @ e_px) * scale, (py @ e_qx) * scale

    def _taper_slope(self, y0: float, x0: float) -> tuple[float, float]:
        """The tabulated slopes at shift (y0, x0), bilinearly interpolated (they vary slowly)."""
        reach = self._slope_reach
        fy = min(max(y0 + reach, 0.0), 2.0 * reach)
        fx = min(max(x0 + reach, 0.0), 2.0 * reach)
        iy, ix = min(int(fy), 2 * reach - 1), min(int(fx), 2 * reach - 1)
        ay, ax = fy - iy, fx - ix
        out = []
        for table in (self._slope_y, self._slope_x):
            top = (1.0 - ax) * table[iy, ix] + ax * table[iy, ix + 1]
            bottom = (1.0 - ax) * table[iy + 1, ix] + ax * table[iy + 1, ix + 1]
            out.append(float((1.0 - ay) * top + ay * bottom))
        return out[0], out[1]

    def _refine(
        self, cross: np.ndarray, y0: float, x0: float, grid: np.ndarray,
        stage: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], final: bool = False,
    ) -> tuple[float, float, float, bool]:
        """Exact band-limited correlation at shifts (y0, x0) + grid x grid (matrix-multiply DFT), scored.

        ``cross`` holds the rows ky and columns kx of ``stage``. The score is log c with the taper
        modelled (module docstring); ``final``: the best point is refined by a parabola on each axis.
        Returns the best (dy, dx), the correlation there and whether it lies on the grid's rim."""
        h, w = self.shape
        ey_grid, ex_grid, ky, kx = stage
        ey = ey_grid * np.exp((2j * np.pi * y0 / h) * ky).astype(np.complex64)
        ex = ex_grid * np.exp((2j * np.pi * x0 / w) * kx).astype(np.complex64)[:, None]
        c = (ey @ (cross @ ex)).real.astype(np.float64)
        top = float(c.max())
        if top > 0.0:
            gy, gx = self._taper_slope(y0, x0)
            score = np.log(np.maximum(c, 1e-9 * top)) - gy * grid[:, None] - gx * grid[None, :]
        else:  # no positive correlation (a frame unlike the reference): nothing to model
            score = c
        iy, ix = divmod(int(score.argmax()), score.shape[1])
        dy, dx = y0 + float(grid[iy]), x0 + float(grid[ix])
        n = len(grid)
        if final and n > 2:
            step = float(grid[1] - grid[0])
            dy += step * _vertex(score[iy - 1 : iy + 2, ix]) if 0 < iy < n - 1 else 0.0
            dx += step * _vertex(score[iy, ix - 1 : ix + 2]) if 0 < ix < n - 1 else 0.0
        rim = n > 1 and (iy in (0, n - 1) or ix in (0, n - 1))
        return dy, dx, float(c[iy, ix]), rim


def _vertex(three: np.ndarray) -> float:
    """Offset (in grid steps, within +-0.5) of the vertex of the parabola through three equally spaced values."""
    a, b, c = (float(v) for v in three)
    curvature = a - 2.0 * b + c
    if curvature >= 0.0:  # not a maximum: keep the grid point
        return 0.0
    return min(0.5, max(-0.5, 0.5 * (a - c) / curvature))


class PiecewiseRegistration:
    """``patches`` x ``patches`` tiles of the (cropped) plane, each registered rigidly on its own.

    The tiles' shifts move the ROIs whose centroid lies in that tile (see :meth:`tile_of`).
    """

    def __init__(self, reference: np.ndarray, cfg: RegistrationConfig) -> None:
        ref = np.asarray(reference, np.float32)
        wy, wx = crop_window(ref.shape[0], ref.shape[1], cfg.crop)
        p = cfg.patches
        self.y_edges = np.linspace(wy.start, wy.stop, p + 1).astype(int)
        self.x_edges = np.linspace(wx.start, wx.stop, p + 1).astype(int)
        tile_cfg = dataclasses.replace(cfg, crop=0)
        self.tiles: list[tuple[slice, slice]] = []
        self.regs: list[RigidRegistration] = []
        for i in range(p):
            for j in range(p):
                tile = (slice(self.y_edges[i], self.y_edges[i + 1]), slice(self.x_edges[j], self.x_edges[j + 1]))
                self.tiles.append(tile)
                self.regs.append(RigidRegistration(ref[tile], tile_cfg))

    def register(self, plane: np.ndarray) -> list[tuple[float, float, float]]:
        """(dy, dx, corr) of every tile, row by row."""
        return [reg.register(plane[tile]) for tile, reg in zip(self.tiles, self.regs, strict=True)]

    def tile_of(self, y: float, x: float) -> int:
        """Index of the tile containing (y, x); points outside the tiled area go to the nearest tile."""
        p = len(self.y_edges) - 1
        i = int(np.clip(np.searchsorted(self.y_edges, y, side="right") - 1, 0, p - 1))
        j = int(np.clip(np.searchsorted(self.x_edges, x, side="right") - 1, 0, p - 1))
        return i * p + j


def align_fov(
    today: np.ndarray, earlier: np.ndarray, plane: int = 0, max_shift_px: float = 100.0, upsample: int = 10
) -> tuple[float, float, float]:
    """Shift (dy, dx) of today's field of view relative to an earlier day's, and the match quality.

    ``today`` and ``earlier`` are reference images shaped (planes, H, W); the BCI ``plane`` is
    compared. ROIs drawn on the earlier reference land on today's field at ``RoiSet.moved(dy, dx)``.
    A ``corr`` well below that of ordinary frames means the field is not the same one.
    """
    cfg = RegistrationConfig(max_shift_px=max_shift_px, upsample=upsample)
    ref = np.asarray(earlier, np.float32)[plane]
    return RigidRegistration(ref, cfg).register(np.asarray(today, np.float32)[plane])
