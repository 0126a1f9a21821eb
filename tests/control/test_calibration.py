"""Threshold calibration on baselines whose answer can be worked out by hand."""

import numpy as np
import pytest

from bcirig.control import CalibrationError, calibrate, threshold_for_fraction
from bcirig.control.calibration import half_gaussian_sigma


def test_threshold_lets_exactly_the_target_fraction_of_windows_reach_it() -> None:
    maxima = np.arange(10, dtype=float)  # 0..9
    t = threshold_for_fraction(maxima, 0.3)  # at most 3 of 10 windows may reach: 7, 8, 9
    assert 6.0 < t <= 7.0
    assert np.sum(maxima >= t) == 3
    assert np.sum(maxima >= np.nextafter(6.0, 0)) == 4  # any lower level lets a 4th window in


def test_threshold_with_ties_never_exceeds_the_target_fraction() -> None:
    maxima = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    t = threshold_for_fraction(maxima, 0.4)  # 2 of 5 allowed; the three 2.0s must all stay below
    assert np.sum(maxima >= t) == 1
    assert t > 2.0


def test_calibration_on_a_staircase_baseline() -> None:
    # baseline readout = frame index mod 100: window of 10 frames starting at s has max (s+9) mod 100
    # unless it wraps; baseline min is 0, so thresholds are in raw units.
    x = np.tile(np.arange(100.0), 5)
    res = calibrate(x, window_frames=10, n_windows=200, target_fraction=0.25, rng=np.random.default_rng(0))
    assert res.baseline_min == 0.0
    assert res.achieved_fraction <= 0.25
    assert np.sum(res.window_maxima >= res.threshold) == np.floor(0.25 * 200) or res.achieved_fraction < 0.25
    # every reported window maximum is the true max of that window of the baseline
    for s, m in zip(res.window_starts[:20], res.window_maxima[:20], strict=True):
        assert m == x[s:s + 10].max()


def test_half_gaussian_sigma_ignores_positive_transients() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0.0, 0.05, 200_000)
    transients = np.where(rng.random(noise.size) < 0.1, rng.exponential(1.0, noise.size), 0.0)
    _median, sigma = half_gaussian_sigma(noise + transients)
    assert sigma == pytest.approx(0.05, rel=0.1)


def test_difficulty_never_drops_across_days() -> None:
    rng = np.random.default_rng(2)
    day1 = rng.normal(0, 1.0, 5000)
    r1 = calibrate(day1, window_frames=50, n_windows=200, target_fraction=0.5, rng=np.random.default_rng(3))
    # day 2 baseline is noisier in absolute terms but identical in shape: z-threshold carried forward
    day2 = rng.normal(0, 1.0, 5000) * 0.5  # quieter day: today's own threshold would be lower
    r2 = calibrate(day2, window_frames=50, n_windows=200, target_fraction=0.5, rng=np.random.default_rng(3),
                   carried_z=r1.threshold_z)
    assert r2.threshold_z >= r1.threshold_z - 1e-9
    assert r2.threshold >= r2.threshold_today


def test_too_short_baseline_is_a_clear_error() -> None:
    with pytest.raises(CalibrationError, match="fewer than one window"):
        calibrate(np.zeros(5), window_frames=10, n_windows=5, target_fraction=0.5, rng=np.random.default_rng(0))
