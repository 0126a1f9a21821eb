"""Baseline fluorescence F0 per ROI, updated every frame over a sliding window.

Every rule sees the same window: the last ``window`` valid frames *including the current one*, starting
at session start (so the baseline seeds it). While fewer frames than ``window`` exist, all frames so far
are used. Values are kept in float64.

* :class:`PercentileF0` — the CLOOSE rule (Francioni 2026): the p-th percentile, numerically identical to
  ``np.percentile(window, p)`` with its default linear interpolation, never a sort of the window per
  frame. Few ROIs: each keeps its window sorted (a contiguous array; one bisect-delete and one
  bisect-insert per ROI). Many ROIs (>= ``BANDED_MIN_ROIS``): all ROIs at once with array operations on
  a band of ranks around the percentile (:class:`_RankBand`).
* :class:`RunningMeanF0` — the HoloBMI rule: mean over the window, by a running sum.
* :class:`KdeModeF0` — Mitani & Komiyama 2018: the mode of a Gaussian kernel density estimate of the
  window (Silverman bandwidth, evaluated on a binned grid). Costs O(window) per ROI per frame.
"""

from __future__ import annotations

import array
import bisect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from operator import itemgetter

import numpy as np

from bcirig.config import F0, F0Kind, Protocol


class F0Rule(ABC):
    """A per-ROI baseline that takes one new value per ROI each frame and returns the current F0."""

    def __init__(self, n_rois: int, window: int, dtype: type = np.float64) -> None:
        if window < 1:
            raise ValueError(f"F0 window must be >= 1 frame, got {window}")
        self.n_rois, self.window = n_rois, window
        self.dtype = np.dtype(dtype)
        self._ring = np.zeros((window, n_rois), self.dtype)  # last `window` values, oldest at _head
        self._count = 0  # frames seen so far (saturates nowhere; the window length is min(count, window))
        self._head = 0

    @property
    def filled(self) -> int:
        """Number of frames currently in the window."""
        return min(self._count, self.window)

    def _push(self, values: np.ndarray) -> np.ndarray | None:
        """Store the new row; return the row that fell out of the window, or None while warming up."""
        old = self._ring[self._head].copy() if self._count >= self.window else None
        self._ring[self._head] = values
        self._head = (self._head + 1) % self.window
        self._count += 1
        return old

    def window_values(self) -> np.ndarray:
        """The current window, shape (filled, n_rois), oldest first (for tests and inspection)."""
        if self._count < self.window:
            return self._ring[: self._count].copy()
        return np.roll(self._ring, -self._head, axis=0)

    @abstractmethod
    def update(self, values: np.ndarray) -> np.ndarray:
        """Add this frame's values (n_rois,) and return F0 (n_rois,) float64 over the new window."""


def percentile_sorted(s: list[float] | array.array[float], q: float) -> float:
    """``np.percentile(s, 100*q)`` (linear method) of an already sorted list, with numpy's exact arithmetic."""
    n = len(s)
    virtual = (n - 1) * q
    prev = int(np.floor(virtual))
    if virtual >= n - 1:
        return s[-1]
    if virtual < 0:
        return s[0]
    a, b = s[prev], s[prev + 1]
    gamma = virtual - prev
    diff = b - a
    # numpy's _lerp: interpolate from the nearer end so the result is exact at both ends
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


class PercentileF0(F0Rule):
    """p-th percentile over the sliding window (CLOOSE), incremental, equal to ``np.percentile``.

    ``dtype=np.float32`` stores the window in float32 (values are rounded once, on entry; the
    interpolation is still float64 and equals ``np.percentile`` of the rounded values). Half the
    memory traffic: 1.05 -> 0.70 ms per frame for 500 ROIs x 3480 frames with cold caches.

    ``banded``: update all ROIs together through :class:`_RankBand` (default: when there are at least
    ``BANDED_MIN_ROIS``). Both ways give bit-identical results; only the cost differs.
    """

    def __init__(
        self, n_rois: int, window: int, percentile: float, dtype: type = np.float64, banded: bool | None = None
    ) -> None:
        super().__init__(n_rois, window, dtype)
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        self.q = float(np.true_divide(percentile, 100))  # the same division np.percentile does
        # contiguous float64 arrays, not lists of boxed floats: 2.4x faster at 500 ROIs x 3480 frames,
        # because bisect's compares and the insert/delete memmoves then stay in cache
        code = "f" if self.dtype == np.float32 else "d"
        self._sorted: list[array.array[float]] = [array.array(code) for _ in range(n_rois)]
        self.banded = n_rois >= BANDED_MIN_ROIS if banded is None else banded
        if self.banded:
            self._band = _RankBand(n_rois, window, self.q, self.dtype)

    def update(self, values: np.ndarray) -> np.ndarray:
        """Add one frame and return the percentile of each ROI's window."""
        new = np.asarray(values, self.dtype)
        old = self._push(new)
        if self.banded:
            return self._band.update(old, new, self.filled, (self._head - 1) % self.window)
        bl, ins = bisect.bisect_left, bisect.insort
        if old is None:
            for s, x in zip(self._sorted, new.tolist(), strict=True):
                ins(s, x)
        else:
            for s, o, x in zip(self._sorted, old.tolist(), new.tolist(), strict=True):
                del s[bl(s, o)]  # `o` is in the list: it is the value pushed `window` frames ago
                ins(s, x)
        # every ROI has the same window length, so the ranks and the weight are shared
        n = self.filled
        virtual = (n - 1) * self.q
        prev = min(math.floor(virtual), n - 1)
        nxt = min(prev + 1, n - 1)
        gamma = virtual - prev
        pairs = np.array(list(map(itemgetter(prev, nxt), self._sorted)), np.float64).reshape(-1, 2)
        a, b = pairs[:, 0], pairs[:, 1]
        diff = b - a
        # numpy's _lerp, elementwise in float64: the same IEEE operations as np.percentile
        return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


# below about this many ROIs the per-ROI bisect loop costs less than the ~40 numpy calls of the band
# (measured: 15 vs 32 us at 10 ROIs, 105 vs 70 us at 100, 700 vs 160 us at 500; window 3480)
BANDED_MIN_ROIS = 64


class _RankBand:
    """All ROIs' percentiles at once: per ROI, only the sorted values at ranks ``[lo, lo + length)``.

    The percentile needs two ranks of each sorted window (347 and 348 of 3480 for the 10th). Each ROI
    keeps a band of up to ``cap`` sorted values around them, in one 2-D array padded with +inf. A frame
    is one set of array operations over all ROIs: the outgoing value is below the band (``lo -= 1``),
    in it (deleted) or above it (nothing); the incoming one likewise (``lo += 1``, inserted, nothing).
    Only the ~15% of ROIs whose band changes are shifted. Equal values are interchangeable, so deleting
    or inserting any copy leaves the same sorted sequence: the band stays exact, ties included.

    Each frame can narrow a band's margin below or above the two ranks by at most one, so every ROI is
    rebuilt exactly from its window (partition + sort of ``cap`` values) once every ``half`` frames, a
    few ROIs per frame; a band that still runs out (warm-up, the first frame) is rebuilt at once.
    """

    def __init__(self, n_rois: int, window: int, q: float, dtype: np.dtype, half: int = 96) -> None:
        self.q, self.half = q, half
        # each ROI's window contiguous, for the rebuilds: gathering a column of the (window, n_rois)
        # ring touched 3480 cache lines (cold caches, 500 ROIs: 285 -> 255 us per frame)
        self.history = np.zeros((n_rois, window), dtype)
        self.cap = 2 * half + 2  # the two ranks and `half` on either side
        # column `cap` stays +inf so a shift may read one past the band
        self.vals = np.full((n_rois, self.cap + 1), np.inf, dtype)
        self.lo = np.zeros(n_rois, np.intp)
        self.length = np.zeros(n_rois, np.intp)
        self._rows = np.arange(n_rois)
        self._cols = np.arange(self.cap + 1)
        phase = (np.arange(n_rois) * half) // max(n_rois, 1)
        self._schedule = [np.flatnonzero(phase == k) for k in range(half)]
        self._frame = 0

    def update(self, old: np.ndarray | None, new: np.ndarray, n: int, slot: int) -> np.ndarray:
        """Apply one frame (``old`` left the window, ``new`` entered at ``slot``; ``n`` values now); F0."""
        vals, lo, length, rows, cap = self.vals, self.lo, self.length, self._rows, self.cap
        self.history[:, slot] = new
        dirty = length == 0
        if old is not None:
            bmin, bmax = vals[:, 0], vals[rows, np.maximum(length - 1, 0)]
            below = old < bmin
            lo -= below
            d = np.flatnonzero(~below & (old <= bmax))
            if d.size:
                band = vals[d]
                pos = np.count_nonzero(band < old[d, None], axis=1)  # first copy of `old`
                src = self._cols + (self._cols >= pos[:, None])
                np.minimum(src, cap, out=src)
                vals[d] = band[self._rows[: d.size, None], src]
                length[d] -= 1
            dirty |= length == 0
        bmin, bmax = vals[:, 0], vals[rows, np.maximum(length - 1, 0)]
        below = (new < bmin) & (lo > 0)
        # a band reaching the top of the window, with room, takes larger values too (warm-up)
        above = (new > bmax) & ((length == cap) | (lo + length != n - 1))
        lo += below
        i = np.flatnonzero(~(below | above))
        if i.size:
            band = vals[i]
            pos = np.count_nonzero(band < new[i, None], axis=1)
            at = self._rows[: i.size]
            out = band[at[:, None], self._cols - (self._cols > pos[:, None])]
            out[at, pos] = new[i]
            out[:, cap] = np.inf  # a full band drops its top value
            vals[i] = out
            length[i] = np.minimum(length[i] + 1, cap)
        virtual = (n - 1) * self.q
        prev = min(math.floor(virtual), n - 1)
        nxt = min(prev + 1, n - 1)
        dirty |= (lo > prev) | (lo + length <= nxt)
        dirty[self._schedule[self._frame % self.half]] = True
        self._frame += 1
        redo = np.flatnonzero(dirty)
        if redo.size:
            self._rebuild(redo, n, prev, nxt)
        a = vals[rows, prev - lo].astype(np.float64)
        b = vals[rows, nxt - lo].astype(np.float64)
        gamma = virtual - prev
        diff = b - a
        # numpy's _lerp, elementwise in float64: the same IEEE operations as np.percentile
        return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma

    def _rebuild(self, rows: np.ndarray, n: int, prev: int, nxt: int) -> None:
        """Bands of ``rows`` recomputed from their windows: ``half`` ranks either side of prev and nxt."""
        lo, hi = max(0, prev - self.half), min(n, nxt + self.half + 1)
        window = self.history[rows, :n]  # a copy; the order of values within a window does not matter
        # one partition and a sort of the short side (a partition on two ranks at once is 5x slower)
        if hi <= n - lo:
            if hi < n:
                window.partition(hi - 1, axis=1)
            band = np.sort(window[:, :hi], axis=1)[:, lo:]
        else:
            if lo > 0:
                window.partition(lo, axis=1)
            band = np.sort(window[:, lo:], axis=1)[:, : hi - lo]
        self.vals[rows] = np.inf
        self.vals[rows, : hi - lo] = band
        self.lo[rows] = lo
        self.length[rows] = hi - lo


class RunningMeanF0(F0Rule):
    """Mean over the sliding window (HoloBMI's 2-minute running mean)."""

    def __init__(self, n_rois: int, window: int) -> None:
        super().__init__(n_rois, window)
        self._sum = np.zeros(n_rois, np.float64)

    def update(self, values: np.ndarray) -> np.ndarray:
        """Add one frame and return the window mean."""
        new = np.asarray(values, np.float64)
        old = self._push(new)
        self._sum += new
        if old is not None:
            self._sum -= old
        if self._count % self.window == 0:
            # re-add from scratch once per window so rounding error of the running sum cannot accumulate
            self._sum = self._ring.sum(axis=0)
        return self._sum / self.filled


class KdeModeF0(F0Rule):
    """Mode of a Gaussian KDE of the window (Mitani & Komiyama 2018), on a grid of ``bins`` points."""

    def __init__(self, n_rois: int, window: int, bins: int = 256) -> None:
        super().__init__(n_rois, window)
        self.bins = bins

    def update(self, values: np.ndarray) -> np.ndarray:
        """Add one frame and return the KDE mode of each ROI's window."""
        self._push(np.asarray(values, np.float64))
        win = self._ring[: self.filled]
        return np.array([kde_mode(win[:, i], self.bins) for i in range(self.n_rois)])


def kde_mode(x: np.ndarray, bins: int = 256) -> float:
    """Mode of a Gaussian KDE with Silverman's bandwidth: histogram on a grid, smoothed, arg-max."""
    lo, hi = float(x.min()), float(x.max())
    n = len(x)
    if n < 2 or hi <= lo:
        return lo
    sd = float(x.std(ddof=1))
    iqr = float(np.subtract(*np.percentile(x, [75, 25])))
    spread = min(sd, iqr / 1.349) if iqr > 0 else sd
    bw = 0.9 * spread * n ** (-0.2) if spread > 0 else (hi - lo) / bins
    pad = 3 * bw
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    hist, _ = np.histogram(x, edges)
    step = edges[1] - edges[0]
    half = max(1, int(np.ceil(3 * bw / step)))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) * step / bw) ** 2)
    density = np.convolve(hist.astype(np.float64), k, mode="same")
    centers = 0.5 * (edges[:-1] + edges[1:])
    return float(centers[int(np.argmax(density))])


def make_f0_rule(protocol: Protocol, n_rois: int) -> F0Rule:
    """The F0 rule named by ``protocol.readout.f0``, with the window ``protocol.f0_window_frames``."""
    cfg = protocol.readout.f0
    build = _F0_RULES.get(cfg.kind)
    if build is None:
        raise ValueError(f"unknown F0 rule '{cfg.kind}'")
    return build(cfg, n_rois, protocol.f0_window_frames)


# F is float32 from the frame onward; a float32 percentile window loses nothing that matters (2^-24
# relative) and halves the memory the per-frame updates touch.
_F0_RULES: dict[F0Kind, Callable[[F0, int, int], F0Rule]] = {
    F0Kind.PERCENTILE: lambda cfg, n_rois, window: PercentileF0(n_rois, window, cfg.percentile, np.float32),
    F0Kind.RUNNING_MEAN: lambda cfg, n_rois, window: RunningMeanF0(n_rois, window),
    F0Kind.KDE_MODE: lambda cfg, n_rois, window: KdeModeF0(n_rois, window),
}
