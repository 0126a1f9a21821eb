"""Threshold calibration from the baseline readout (Francioni et al. 2026, CLOOSE).

Windows of the evaluated trial length are resampled from the baseline readout (expressed above the baseline
minimum); the threshold is the lowest level that no more than ``target_fraction`` of the windows reach.
From day 2 on, the threshold is also expressed in units of the baseline noise (a half-Gaussian fit) and
carried to the next day, where one of these rules (``calibration.across_days``) decides:

* ``stricter`` (the study's rule, the default): the stricter of today's and yesterday's. Difficulty never
  drops, but each day's threshold is a noisy estimate and the running maximum of noisy estimates climbs on
  noise alone: a mouse that learns nothing sees its calibrated chance fall from the target (``bcirig
  simulate --rule none``: 0.47 on day 1 to about 0.25 after a few days).
* ``today``: today's threshold alone (difficulty may drop).
* ``pooled``: the mean of the last ``pool_days`` days' own thresholds in noise units, today's included, so
  the day-to-day noise shrinks instead of ratcheting; difficulty may not drop below yesterday's threshold
  by more than twice the standard error of that mean (the noise margin), so a real drop in difficulty is
  still refused while noise is not mistaken for one.
* ``margin``: today's threshold, unless it is below yesterday's by more than twice its noise: the stricter
  rule applied only beyond a noise margin. The noise is the larger of today's own standard error (the
  sampling error of a quantile of ``n`` independent windows, ``n`` = baseline frames / window frames)
  and, once three days are known, the spread of the last ``pool_days`` days' own thresholds (days differ
  by more than one baseline's sampling error shows).

Today's threshold comes from one of the registered rules (``RULES``, chosen by ``calibration.rule``):

* ``resampled_fraction`` (above; Francioni 2026, CLOOSE);
* ``target_rate`` (the Carmena lab's acquisition code, Vendrell-Llopis 2022): the lowest threshold at which
  the baseline readout, run through the trial rules (the refractory rule, and the hold, ITI and grey frames
  during which no hit can count), would have earned at most ``target_hits_per_min`` hits per minute;
* ``fixed``: ``calibration.fixed_threshold``, the rig operator's number.

The windows are drawn whatever the rule, so the fraction of them that reach the threshold, the calibrated
chance, is reported for every rule. For lickport feedback a window "reaches" the threshold when the port it
drives would have arrived (the window's summed readout, scaled by the port's speed and travel).
``calibration.fixed_threshold`` given with another rule replaces its result (what-if replay).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bcirig.config import AcrossDays, CalibrationRule, FeedbackKind, Protocol

NOISE_MARGIN_SE = 2.0  # pooled rule: difficulty may drop by at most this many standard errors of the mean


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
    rule: str = "today"  # across-days rule applied: stricter, today, pooled, margin, or fixed (a given one)
    threshold_today_z: float = float("nan")  # today's own threshold in noise units (pooled carries it)
    days_pooled: int = 1  # pooled: days averaged; margin: days whose spread was looked at (today's included)
    pooled_z: float = float("nan")  # pooled: their mean (before the noise-margin floor)
    floor_z: float = float("nan")  # pooled, margin: yesterday's threshold_z minus the noise margin (NaN day 1)
    previous_z: tuple[float, ...] = ()  # pooled: the earlier days' own thresholds it was given (replay needs them)

    def summary(self) -> dict[str, float | int | str | list[float]]:
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
            "rule": self.rule,
            "threshold_today_z": self.threshold_today_z,
            "days_pooled": self.days_pooled,
            "pooled_z": self.pooled_z,
            "floor_z": self.floor_z,
            "previous_z": list(self.previous_z),
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


def quantile_standard_error(values: np.ndarray, fraction: float, independent: float) -> float:
    """Sampling error of the level that ``fraction`` of the windows reach, from ``independent`` windows.

    The asymptotic error of a sample quantile, sqrt(p (1 - p) / n) / f, with the density f at the quantile
    estimated from the spread of the values between the p - 0.1 and p + 0.1 quantiles (0 when they tie).
    """
    v = np.asarray(values, np.float64)
    p = min(max(1.0 - fraction, 0.1), 0.9)  # the level is the (1 - fraction) quantile of the maxima
    lo, hi = np.quantile(v, [max(p - 0.1, 0.0), min(p + 0.1, 1.0)])
    spread = (min(p + 0.1, 1.0) - max(p - 0.1, 0.0))
    return float(math.sqrt(p * (1 - p) / max(independent, 1.0)) * (hi - lo) / spread)


@dataclass(frozen=True)
class HitRules:
    """What the task's trial rules make of a readout, for the rules that count the hits a baseline earns."""

    frame_rate_hz: float
    dead_frames: int = 0  # after a hit: hold, ITI and grey frames, in which no hit can count
    refractory_fraction: float = 0.0  # the next hit counts once the readout stayed below fraction * threshold
    refractory_frames: int = 0  # ... for this many frames
    travel_scale: float = 0.0  # lickport: speed / (frame rate * travel); a hit when the summed readout arrives

    @classmethod
    def of(cls, protocol: Protocol) -> HitRules:
        """The rules a protocol's task applies."""
        hit, t, fb = protocol.outcomes.hit, protocol.trials, protocol.feedback
        scale = 0.0
        if fb.kind is FeedbackKind.LICKPORT:
            scale = fb.lickport_speed_mm_s / (protocol.imaging.frame_rate_hz * fb.lickport_travel_mm)
        return cls(frame_rate_hz=protocol.imaging.frame_rate_hz,
                   dead_frames=max(hit.hold_frames - 1, 0) + hit.iti_frames + t.grey_frames,
                   refractory_fraction=t.refractory_fraction, refractory_frames=t.refractory_frames,
                   travel_scale=scale)


def window_statistic(above: np.ndarray, window_frames: int, rules: HitRules | None = None) -> np.ndarray:
    """For each window start, the highest threshold at which that window has a hit.

    The window's maximum (a threshold crossing); for a lickport, its summed readout above the baseline minimum
    times ``travel_scale`` (the port arrives when that sum, over the threshold, covers the travel). Invalid
    frames (NaN) count as no activity.
    """
    if rules is not None and rules.travel_scale > 0:
        pos = np.where(np.isfinite(above), np.maximum(above, 0.0), 0.0)
        csum = np.concatenate([[0.0], np.cumsum(pos)])
        return np.asarray((csum[window_frames:] - csum[:-window_frames]) * rules.travel_scale, np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(np.where(np.isfinite(above), above, -np.inf), window_frames)
    return np.asarray(windows.max(axis=1), np.float64)


def baseline_hits(above: np.ndarray, threshold: float, rules: HitRules) -> int:
    """Hits the baseline readout (above its minimum) would have earned at ``threshold`` under ``rules``."""
    if threshold <= 0:
        return int(np.isfinite(above).sum())
    refractory = rules.refractory_fraction > 0 and rules.refractory_frames > 0
    low = rules.refractory_fraction * threshold
    armed, below, dead, pos, hits = True, 0, 0, 0.0, 0
    for v in above.tolist():
        finite = v == v
        if refractory and not armed:
            below = below + 1 if finite and v < low else 0
            armed = below >= rules.refractory_frames
        if dead:
            dead -= 1
            continue
        if not finite:
            continue
        if rules.travel_scale > 0:
            pos += max(v, 0.0) * rules.travel_scale / threshold
            hit = pos >= 1.0
        else:
            hit = v >= threshold
        if hit and armed:
            hits += 1
            dead = rules.dead_frames
            armed, below, pos = not refractory, 0, 0.0
    return hits


def threshold_for_rate(above: np.ndarray, hits_per_min: float, rules: HitRules) -> float:
    """Lowest threshold at which the baseline earns at most ``hits_per_min`` (bisection to 1e-6 relative)."""
    minutes = above.size / rules.frame_rate_hz / 60.0
    allowed = math.floor(hits_per_min * minutes + 1e-9)
    finite = above[np.isfinite(above)]
    hi = float(finite.max()) if finite.size else 1.0
    if rules.travel_scale > 0:
        hi = float(np.maximum(finite, 0.0).sum()) * rules.travel_scale
    hi = max(hi, 1e-12) * (1 + 1e-9) + 1e-12
    lo = 0.0
    if baseline_hits(above, hi, rules) > allowed:  # cannot happen for a crossing (nothing reaches above the max)
        return hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if baseline_hits(above, mid, rules) <= allowed:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-6 * hi:
            break
    return hi


@dataclass(frozen=True)
class BaselineWindows:
    """The baseline as the rules see it: readout above its minimum and the resampled windows' statistic."""

    above: np.ndarray
    maxima: np.ndarray  # per drawn window: the highest threshold at which it has a hit
    target_fraction: float
    hits_per_min: float
    rules: HitRules | None
    fixed: float | None


ThresholdRule = Callable[[BaselineWindows], float]


def _resampled_fraction(w: BaselineWindows) -> float:
    return threshold_for_fraction(w.maxima, w.target_fraction)


def _target_rate(w: BaselineWindows) -> float:
    if w.rules is None:
        raise CalibrationError("calibration.rule = 'target_rate' needs the trial rules (frame rate, hold, ITI)")
    return threshold_for_rate(w.above, w.hits_per_min, w.rules)


def _fixed(w: BaselineWindows) -> float:
    if w.fixed is None:
        raise CalibrationError("calibration.rule = 'fixed' needs calibration.fixed_threshold")
    return float(w.fixed)


RULES: dict[CalibrationRule, ThresholdRule] = {
    CalibrationRule.RESAMPLED_FRACTION: _resampled_fraction,
    CalibrationRule.TARGET_RATE: _target_rate,
    CalibrationRule.FIXED: _fixed,
}


def calibrate(
    baseline_readout: np.ndarray,
    *,
    window_frames: int,
    n_windows: int,
    target_fraction: float,
    rng: np.random.Generator,
    carried_z: float = float("nan"),
    rule: AcrossDays | str | None = None,
    previous_z: tuple[float, ...] = (),
    pool_days: int = 1,
    fixed_threshold: float | None = None,
    threshold_rule: CalibrationRule = CalibrationRule.RESAMPLED_FRACTION,
    hit_rules: HitRules | None = None,
    target_hits_per_min: float = 0.6,
) -> CalibrationResult:
    """Calibrate the hit threshold from the smoothed baseline readout (NaN marks rejected frames).

    ``carried_z`` is yesterday's threshold in noise units (NaN on day 1). ``rule``: ``stricter`` (the default
    when ``carried_z`` is given), ``today``, or ``pooled`` with ``previous_z`` (earlier days' own thresholds,
    oldest first) and ``pool_days``. ``threshold_rule`` picks today's threshold from ``RULES``
    (``hit_rules`` for target_rate and lickport windows). ``fixed_threshold`` overrides the result (readout
    units above the baseline minimum); the windows are still drawn, so the achieved fraction says what it
    means today.
    """
    if rule is None:
        rule = AcrossDays.STRICTER if math.isfinite(carried_z) else AcrossDays.TODAY
    if rule not in set(AcrossDays):
        raise ValueError(f"calibration rule {rule!r}: expected one of " + ", ".join(repr(r.value) for r in AcrossDays))
    across = AcrossDays(rule)
    applied = across.value  # what the result says was applied ("fixed" for a given threshold)
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
    # The statistic of every window start at once (sliding maximum, or sum for a lickport), then pick.
    maxima = window_statistic(above, window_frames, hit_rules)[starts]
    maxima = np.where(np.isfinite(maxima), maxima, 0.0)
    threshold_today = RULES[CalibrationRule(threshold_rule)](BaselineWindows(
        above=above, maxima=maxima, target_fraction=target_fraction, hits_per_min=target_hits_per_min,
        rules=hit_rules, fixed=fixed_threshold))
    median, sigma = half_gaussian_sigma(x[valid])

    def to_z(level_above_min: float) -> float:
        return (baseline_min + level_above_min - median) / sigma if sigma > 0 else float("nan")

    def from_z(z: float) -> float:
        return median + z * sigma - baseline_min

    today_z = to_z(threshold_today)
    threshold = threshold_today
    days_pooled, pooled_z, floor_z = 1, float("nan"), float("nan")
    if fixed_threshold is not None:
        threshold, applied = float(fixed_threshold), CalibrationRule.FIXED.value
    elif across is AcrossDays.STRICTER and math.isfinite(carried_z) and sigma > 0:
        threshold = max(threshold_today, from_z(carried_z))
    elif across is AcrossDays.POOLED and math.isfinite(today_z):
        pool = [z for z in previous_z if math.isfinite(z)][-(pool_days - 1):] if pool_days > 1 else []
        pool.append(today_z)
        days_pooled, pooled_z = len(pool), float(np.mean(pool))
        z = pooled_z
        if math.isfinite(carried_z) and days_pooled >= 2:
            # Yesterday's threshold may be undercut only by more than the pooled mean's own noise: a drop
            # within noise is not a drop in difficulty, one beyond it is refused.
            se = float(np.std(pool, ddof=1)) / math.sqrt(days_pooled)
            floor_z = carried_z - NOISE_MARGIN_SE * se
            z = max(z, floor_z)
        threshold = from_z(z)
    elif across is AcrossDays.MARGIN and math.isfinite(carried_z) and math.isfinite(today_z):
        se = quantile_standard_error((baseline_min + maxima - median) / sigma, target_fraction,
                                     independent=x.size / window_frames)
        own = [z for z in previous_z if math.isfinite(z)][-(pool_days - 1):] if pool_days > 1 else []
        own.append(today_z)
        days_pooled = len(own)
        if len(own) >= 3:  # a spread of fewer days says little
            se = max(se, float(np.std(own, ddof=1)))
        floor_z = carried_z - NOISE_MARGIN_SE * se
        threshold = max(threshold_today, from_z(floor_z))
    threshold_z = to_z(threshold)
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
        rule=applied,
        threshold_today_z=float(today_z),
        days_pooled=days_pooled,
        pooled_z=pooled_z,
        floor_z=floor_z,
        previous_z=tuple(float(z) for z in previous_z) if across in (AcrossDays.POOLED, AcrossDays.MARGIN) else (),
    )


def calibrate_day(
    baseline_readout: np.ndarray,
    config: Any,
    *,
    window_frames: int,
    rng: np.random.Generator,
    carried: dict[str, Any] | None = None,
    hit_rules: HitRules | None = None,
) -> CalibrationResult:
    """Calibrate with a protocol's ``[calibration]`` table and what yesterday's task carried forward."""
    carried = carried or {}
    rule = AcrossDays(config.across_days)
    return calibrate(
        baseline_readout,
        window_frames=window_frames,
        n_windows=config.windows,
        target_fraction=config.target_hit_fraction,
        rng=rng,
        carried_z=float(carried.get("threshold_z", float("nan"))) if rule is not AcrossDays.TODAY else float("nan"),
        rule=rule,
        previous_z=tuple(float(z) for z in carried.get("daily_z", ())),
        pool_days=int(getattr(config, "pool_days", 1)),
        fixed_threshold=getattr(config, "fixed_threshold", None),
        threshold_rule=getattr(config, "rule", CalibrationRule.RESAMPLED_FRACTION),
        hit_rules=hit_rules,
        target_hits_per_min=float(getattr(config, "target_hits_per_min", 0.6)),
    )


def carry_state(result: CalibrationResult | None, carried: dict[str, Any] | None, pool_days: int = 1) -> dict[str, Any]:
    """What tomorrow's calibration needs: the threshold in noise units, the day, and (pooled) the last days'
    own thresholds. A study-rule session carries exactly what it always did."""
    carried = dict(carried or {})
    if result is None:
        return carried
    out: dict[str, Any] = {"threshold_z": result.threshold_z, "day": int(carried.get("day", 1)) + 1}
    if result.rule in (AcrossDays.POOLED, AcrossDays.MARGIN) or "daily_z" in carried:
        history = [float(z) for z in carried.get("daily_z", ())] + [result.threshold_today_z]
        out["daily_z"] = history[-max(1, pool_days - 1):] if pool_days > 1 else []
    return out
