"""Smoothing of the decoder output (``protocol.readout.smoothing``).

Only finite decoder outputs enter the state; a non-finite one (e.g. a PCA decoder not yet fitted)
gives a NaN readout for that frame and leaves the state as it was.
"""

from __future__ import annotations

import math

from bcirig.config import Smoothing as SmoothingConfig
from bcirig.config import SmoothingKind


class Smoother:
    """Moving mean of the last ``frames`` outputs (fewer while warming up), EMA, or none.

    * moving_mean: ``mean(x[t-frames+1 .. t])`` over the finite outputs so far (CLOOSE: 3 frames).
    * ema: ``s[t] = alpha * x[t] + (1 - alpha) * s[t-1]``, with ``s[0] = x[0]``.
    * none: ``x[t]``.
    """

    def __init__(self, cfg: SmoothingConfig) -> None:
        self.kind, self.frames, self.alpha = cfg.kind, cfg.frames, cfg.alpha
        self._ring: list[float] = []
        self._head = 0
        self._ema = math.nan
        rules = {SmoothingKind.MOVING_MEAN: self._moving_mean, SmoothingKind.EMA: self._ema_step,
                 SmoothingKind.NONE: self._none}
        self._step = rules[cfg.kind]  # chosen once: the per-frame call dispatches on nothing

    def update(self, x: float) -> float:
        """Add one decoder output and return the smoothed readout."""
        if not math.isfinite(x):
            return math.nan
        return self._step(x)

    def _moving_mean(self, x: float) -> float:
        if len(self._ring) < self.frames:
            self._ring.append(x)
        else:
            self._ring[self._head] = x
            self._head = (self._head + 1) % self.frames
        return math.fsum(self._ring) / len(self._ring)  # fsum: exact, so order cannot matter

    def _ema_step(self, x: float) -> float:
        self._ema = x if math.isnan(self._ema) else self.alpha * x + (1.0 - self.alpha) * self._ema
        return self._ema

    def _none(self, x: float) -> float:
        return x
