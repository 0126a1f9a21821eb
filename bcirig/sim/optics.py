"""Simulated microscope: calcium indicator, frame rendering (pixels) and ROI traces (traces level).

Brightness model, in digitiser counts, per pixel ``p`` and frame ``t``::

    I_p(t) = s(t) * (B_p + sum_k w_kp * rest_k * dff_k(t)) + offset + noise

``B`` is the static image (background texture + resting footprints), ``s(t)`` a global factor for
photobleaching, slow drift and neuropil (population) fluctuation, ``dff_k`` the GCaMP response of
source ``k`` (double exponential, saturating). Noise is the Gaussian approximation of shot noise
(variance ``counts_per_photon * mean``): a background part read from a precomputed "tape" of normal
deviates at a random offset each frame (no full-frame random draw per frame: the render must be fast;
a random offset makes the noise of a pixel independent from frame to frame), plus a part on footprint
pixels carrying their extra variance (another tape). Motion is an integer rigid shift: a slice of a
padded static image plus shifted footprint indices, so nothing is interpolated. The traces level computes the same ROI
means in closed form: ``F = s * mean_roi(B + footprints @ extra) + offset + N(0, var_roi)``.
"""

from __future__ import annotations

import math

import numpy as np

from bcirig.config import Protocol
from bcirig.sim.config import SimConfig
from bcirig.sim.footprints import Source, background, footprint, motion_margin

_DTYPE_MAX = {"uint8": 255, "uint16": 65535, "uint32": 4294967295}


class Indicator:
    """GCaMP-like calcium dynamics per source: Poisson spikes -> double exponential -> Hill saturation."""

    def __init__(self, cfg: SimConfig, n_sources: int, frame_rate_hz: float) -> None:
        dt = 1.0 / frame_rate_hz
        self.dt = dt
        self.decay = math.exp(-dt / (cfg.decay_ms / 1000.0))
        self.rise = math.exp(-dt / (cfg.rise_ms / 1000.0))
        self.k = cfg.half_saturation_spikes
        self.dff_max = cfg.dff_max
        self.slow = np.zeros(n_sources)
        self.fast = np.zeros(n_sources)

    def step(self, rates_hz: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Advance one frame; returns (spike counts, dF/F) per source."""
        spikes = rng.poisson(rates_hz * self.dt)
        self.slow *= self.decay
        self.fast *= self.rise
        self.slow += spikes
        self.fast += spikes
        c = self.slow - self.fast
        return spikes, self.dff_max * c / (c + self.k)


class Optics:
    """Footprints and the static image of one mouse; renders frames or ROI traces from source dF/F."""

    def __init__(self, protocol: Protocol, cfg: SimConfig, sources: list[Source], anatomy_seed: int,
                 rng: np.random.Generator, *, pixels: bool = True) -> None:
        im = protocol.imaging
        self.cfg = cfg
        self.rng = rng
        self.shape = (im.planes, im.height, im.width)
        self.dtype = np.dtype(im.dtype)
        self.max_value = _DTYPE_MAX[im.dtype]
        self.pad = motion_margin(cfg)
        self.sources = sources
        self.rest = np.array([s.rest_counts for s in sources])
        base_pad = background(protocol, cfg, anatomy_seed, self.pad)
        # Footprint pixels, flattened in frame coordinates (all footprints lie inside the motion margin).
        planes, h, w = self.shape
        ys, xs, ps, ws, ks = [], [], [], [], []
        for k, s in enumerate(sources):
            y, x, wt = footprint(s)
            ys.append(y)
            xs.append(x)
            ps.append(np.full(len(y), s.plane))
            ws.append(wt)
            ks.append(np.full(len(y), k))
            base_pad[s.plane, y + self.pad, x + self.pad] += s.rest_counts * wt
        self.base_pad = base_pad
        self.base = np.ascontiguousarray(base_pad[:, self.pad:self.pad + h, self.pad:self.pad + w])
        flat = (np.concatenate(ps) * h + np.concatenate(ys)) * w + np.concatenate(xs) if sources else np.zeros(0, int)
        self.pix_unique, self.pix_u = np.unique(flat, return_inverse=True)
        self.pix_src = np.concatenate(ks) if sources else np.zeros(0, int)
        self.pix_w = np.concatenate(ws) if sources else np.zeros(0)
        self.u_plane, rem = np.divmod(self.pix_unique, h * w)
        self.u_y, self.u_x = np.divmod(rem, w)
        # Shot noise: the tape carries the background level's variance; footprint pixels get the rest.
        self.sigma_bg = math.sqrt(cfg.counts_per_photon * float(np.median(self.base)))
        extra_var = cfg.counts_per_photon * np.maximum(
            self.base.reshape(-1)[self.pix_unique] - self.sigma_bg**2 / cfg.counts_per_photon, 0.0)
        self.sigma_extra = np.sqrt(extra_var)
        n = planes * h * w
        # Background noise + PMT offset, already rounded to the frame's integer type (>= 0 by construction).
        tape = rng.standard_normal(4 * n if pixels else 0) * self.sigma_bg + cfg.pmt_offset
        self.tape = np.clip(np.rint(tape), 0, self.max_value).astype(self.dtype)
        # Footprint pixels' extra shot noise: a second tape, read at a random offset each frame.
        self.tape_fp = rng.standard_normal(4 * len(self.pix_unique) + 1 if pixels else 0)
        self._scaled: dict[int, np.ndarray] = {}  # quantised scale -> rounded scaled static image
        self._n = n
        if float(self.base_pad.max()) * 1.5 + cfg.pmt_offset > self.max_value:
            raise ValueError(f"simulated brightness exceeds the {im.dtype} range: lower simulation.*_counts")

    # ------------------------------------------------------------------------------------ pixels
    def render(self, extra: np.ndarray, scale: float, shift: tuple[int, int]) -> np.ndarray:
        """One frame: ``extra`` = brightness above rest per source (counts), ``scale`` = s(t)."""
        _planes, h, w = self.shape
        dy, dx = shift
        p = self.pad
        frame: np.ndarray
        frame = np.add(self._scaled_base(scale)[:, p - dy:p - dy + h, p - dx:p - dx + w],
                       self.tape[(off := int(self.rng.integers(0, 3 * self._n))):off + self._n].reshape(self.shape))
        vals = np.bincount(self.pix_u, weights=self.pix_w * extra[self.pix_src], minlength=len(self.pix_unique))
        k = len(vals)
        off = int(self.rng.integers(0, 3 * k + 1))
        vals = vals.astype(np.float64) * scale + self.sigma_extra * self.tape_fp[off:off + k] + 0.5
        target = (self.u_plane * h + self.u_y + dy) * w + self.u_x + dx
        flat = frame.reshape(-1)
        flat[target] = np.clip(flat[target] + vals, 0.0, self.max_value)
        return frame

    def _scaled_base(self, scale: float) -> np.ndarray:
        """The static image times ``scale``, rounded to the frame dtype; cached per 0.1 % step of scale.

        The global factor moves slowly (bleaching, drift, neuropil), so a few dozen cached images serve a
        session and the per-frame work is one integer add. The 0.1 % quantisation of the static part is
        far below the shot noise (sd ~ 3 % of a background pixel).
        """
        q = round(math.log(max(scale, 1e-6)) / math.log(1.001))
        img = self._scaled.get(q)
        if img is None:
            if len(self._scaled) >= 64:
                self._scaled.pop(next(iter(self._scaled)))  # oldest first: the scale drifts one way
            img = np.clip(np.rint(self.base_pad * 1.001**q), 0, self.max_value).astype(self.dtype)
            self._scaled[q] = img
        return img

    # ------------------------------------------------------------------------------------ traces
    def roi_model(self, masks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> RoiModel:
        """Closed-form ROI means for masks given as (plane, y, x, weight) in frame coordinates."""
        return RoiModel(self, masks)


class RoiModel:
    """Weighted ROI means of the rendered frame, computed without rendering (the traces level)."""

    def __init__(self, optics: Optics, masks: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        _planes, h, w = optics.shape
        n_src = len(optics.sources)
        self.base = np.zeros(len(masks))
        self.overlap = np.zeros((len(masks), n_src))
        self.sd = np.zeros(len(masks))
        self.offset = optics.cfg.pmt_offset
        # Per-pixel footprint weight matrix in sparse form: pixel -> (source, weight).
        src_at: dict[int, list[tuple[int, float]]] = {}
        flat = optics.pix_unique[optics.pix_u]
        for f, k, wt in zip(flat.tolist(), optics.pix_src.tolist(), optics.pix_w.tolist(), strict=True):
            src_at.setdefault(f, []).append((k, wt))
        extra_var = dict(zip(optics.pix_unique.tolist(), (optics.sigma_extra**2).tolist(), strict=True))
        for i, (plane, y, x, wt) in enumerate(masks):
            wsum = float(wt.sum())
            idx = (plane * h + y.astype(np.int64)) * w + x
            self.base[i] = float((optics.base.reshape(-1)[idx] * wt).sum()) / wsum
            var = 0.0
            for f, a in zip(idx.tolist(), wt.tolist(), strict=True):
                for k, fw in src_at.get(f, ()):
                    self.overlap[i, k] += a * fw / wsum
                var += a * a * (optics.sigma_bg**2 + extra_var.get(f, 0.0) + 1.0 / 12.0)
            self.sd[i] = math.sqrt(var) / wsum

    def traces(self, extra: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
        """ROI means (counts) for one frame, with the noise the pixels would have."""
        f: np.ndarray = self.base + self.overlap @ extra
        f *= scale
        f += self.offset
        f += self.sd * rng.standard_normal(len(f))
        return f
