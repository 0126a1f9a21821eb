"""Threshold calibration from the baseline readout (Francioni et al. 2026, CLOOSE).

Windows of the evaluated trial length are resampled from the baseline readout (expressed above the baseline
minimum); the threshold is the lowest level that no more than ``target_fraction`` of the windows reach.
From day 2 on, the threshold is also expressed in units of the baseline noise (a half-Gaussian fit), and
the stricter of today's and yesterday's is used, so difficulty never drops across days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class CalibrationError(ValueError):
    """The baseline cannot be calibrated (too short, or no valid readout)."""


@dataclass(frozen=True)
class CalibrationResult:
    """Everything the calibration decided, and the inputs needed to check it by hand."""

    baseline_min: float  # minimum of the smoothed baseline readout (the readout's zero)
    threshold: float  # above baseline_min; a hit is readout - baseline_min >= threshold
    threshold_today: float  # today's resampled-window threshold, before the across-day rule
    baseline_median: float
    noise_sigma: float  # half-Gaussian fit of the baseline noise below the median
    threshold_z: float  # (baseline_min + threshold - median) / sigma: carried to the next day
    carried_z: float  # yesterday's threshold_z (NaN on day 1)
    target_fraction: float
    achieved_fraction: float  # fraction of windows whose maximum reaches the threshold
    window_frames: int
    window_starts: np.ndarray  # (n_windows,) baseline frame index where each window starts
    window_maxima: np.ndarray  # (n_windows,) maximum of each window, above baseline_min

    def summary(self) -> dict[str, float | int]:
        """Scalar results for the event table and the session summary."""
        return {
            "baseline_min": self.baseline_min,
            "threshold": self.threshold,
            "threshold_today": self.threshold_today,
            "baseline_median": self.baseline_median,
            "noise_sigma": self.noise_sigma,
            "threshold_z": self.threshold_z,
            "carried_z": self.carried_z,
            "target_fraction": self.target_fraction,
            "achieved_fraction": self.achieved_fraction,
            "window_frames": self.window_frames,
            "windows": len(self.window_starts),
        }


def half_gaussian_sigma(values: np.ndarray) -> tuple[float, float]:
    """Median and sigma of the noise, fitted on the half below the median (transients are one-sided)."""
    median = float(np.median(values))
    below = values[values <= median] - median
    sigma = float(np.sqrt(np.mean(below**2))) if below.size else 0.0
    return median, sigma


def threshold_for_fraction(window_maxima: np.ndarray, target_fraction: float) -> float:
    """Lowest level that at most ``target_fraction`` of the windows reach (maximum >= level).

    With maxima sorted in descending order m[0] >= m[1] >= ..., and k = floor(target * n), the level is
    the smallest float above m[k]: exactly the k highest windows (fewer with ties) reach it.
    """
    n = len(window_maxima)
    k = math.floor(target_fraction * n + 1e-9)
    if k >= n:
        return float(np.min(window_maxima))
    desc = np.sort(window_maxima)[::-1]
    return float(np.nextafter(desc[k], np.inf))


def calibrate(
    baseline_readout: np.ndarray,
    *,
    window_frames: int,
    n_windows: int,
    target_fraction: float,
    rng: np.random.Generator,
    carried_z: float = float("nan"),
) -> CalibrationResult:
    """Calibrate the hit threshold from the smoothed baseline readout (NaN marks rejected frames)."""
    x = np.asarray(baseline_readout, dtype=np.float64)
    valid = np.isfinite(x)
    if valid.sum() < window_frames:
        raise CalibrationError(
            f"baseline has {int(valid.sum())} valid readout frames, fewer than one window of {window_frames}"
        )
    if x.size < window_frames:
        raise CalibrationError(f"baseline of {x.size} frames is shorter than a {window_frames}-frame window")
    baseline_min = float(np.nanmin(x))
    above = x - baseline_min
    starts = rng.integers(0, x.size - window_frames + 1, size=n_windows)
    # Maximum of every window start at once: sliding maximum over all positions, then pick.
    windows = np.lib.stride_tricks.sliding_window_view(np.where(valid, above, -np.inf), window_frames)
    all_maxima = windows.max(axis=1)
    maxima = all_maxima[starts]
    maxima = np.where(np.isfinite(maxima), maxima, 0.0)
    threshold_today = threshold_for_fraction(maxima, target_fraction)
    median, sigma = half_gaussian_sigma(x[valid])
    threshold = threshold_today
    if math.isfinite(carried_z) and sigma > 0:
        carried_abs = median + carried_z * sigma
        threshold = max(threshold_today, carried_abs - baseline_min)
    threshold_z = (baseline_min + threshold - median) / sigma if sigma > 0 else float("nan")
    achieved = float(np.mean(maxima >= threshold))
    return CalibrationResult(
        baseline_min=baseline_min,
        threshold=float(threshold),
        threshold_today=float(threshold_today),
        baseline_median=median,
        noise_sigma=sigma,
        threshold_z=float(threshold_z),
        carried_z=float(carried_z),
        target_fraction=float(target_fraction),
        achieved_fraction=achieved,
        window_frames=int(window_frames),
        window_starts=starts.astype(np.int64),
        window_maxima=maxima.astype(np.float64),
    )
