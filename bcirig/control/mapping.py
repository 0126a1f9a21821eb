"""Readout -> what the mouse perceives: binned grating orientation, or tone pitch (continuous or binned)."""

from __future__ import annotations

import math

from bcirig.config import FeedbackConfig


def activity_bin(readout_norm: float, threshold: float, steps: int) -> int:
    """Bin 0..steps-1 of a readout above the baseline minimum; bins run linearly from 0 to the threshold."""
    if not math.isfinite(readout_norm) or threshold <= 0:
        return 0
    return min(steps - 1, max(0, math.floor(readout_norm / threshold * steps)))


def grating_angle(readout_norm: float, threshold: float, cfg: FeedbackConfig) -> float:
    """Grating orientation in degrees: bin 0 is target - (steps-1)*step, the top bin is the target."""
    b = activity_bin(readout_norm, threshold, cfg.steps)
    return cfg.target_deg - (cfg.steps - 1 - b) * cfg.step_deg


def tone_frequency(readout_norm: float, threshold: float, cfg: FeedbackConfig) -> float:
    """Tone pitch in Hz, linear in octaves from tone_min_hz (baseline minimum) to tone_max_hz (threshold).

    With ``tone_bins`` > 1 the pitch moves in that many steps (bins run linearly to the threshold, the top
    bin at the threshold, as the grating's do); otherwise continuously.
    """
    frac = 0.0 if not math.isfinite(readout_norm) or threshold <= 0 else min(1.0, max(0.0, readout_norm / threshold))
    if cfg.tone_bins > 1:
        frac = activity_bin(readout_norm, threshold, cfg.tone_bins) / (cfg.tone_bins - 1)
    return float(cfg.tone_min_hz * (cfg.tone_max_hz / cfg.tone_min_hz) ** frac)
