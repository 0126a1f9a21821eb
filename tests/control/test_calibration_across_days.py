"""Calibration across days: the study's ratchet, the pooled rule with its noise margin, a fixed threshold."""

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pytest

from bcirig.config import parse_protocol
from bcirig.control import CalibrationResult, Task, calibrate, carry_state
from bcirig.control.calibration import NOISE_MARGIN_SE, quantile_standard_error
from bcirig.messages import Readout
from tests.conftest import protocol_text

WINDOW, N_WINDOWS, TARGET = 60, 200, 0.5


def _baseline(seed: int, frames: int = 3000) -> np.ndarray:
    """A stationary baseline: smoothed Gaussian noise with sparse positive transients (no learning)."""
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.normal(0.0, 1.0, frames + 9), np.ones(10) / 10, mode="valid")
    return x + np.where(rng.random(frames) < 0.01, rng.exponential(1.0, frames), 0.0)


def _days(rule: str, days: int = 14, pool_days: int = 5) -> list[CalibrationResult]:
    carried: dict[str, Any] = {}
    out = []
    for d in range(days):
        res = calibrate(_baseline(100 + d), window_frames=WINDOW, n_windows=N_WINDOWS, target_fraction=TARGET,
                        rng=np.random.default_rng(d), carried_z=float(carried.get("threshold_z", math.nan)),
                        rule=rule, previous_z=tuple(carried.get("daily_z", ())), pool_days=pool_days)
        carried = carry_state(res, carried, pool_days)
        out.append(res)
    return out


def test_the_study_rule_ratchets_on_noise_alone_and_the_pooled_and_margin_rules_do_not() -> None:
    stricter, pooled, margin = _days("stricter"), _days("pooled"), _days("margin")
    z = [r.threshold_z for r in stricter]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(z))  # the running maximum
    assert z[-1] == pytest.approx(max(r.threshold_today_z for r in stricter))
    late_stricter = np.mean([r.achieved_fraction for r in stricter[4:]])
    late_pooled = np.mean([r.achieved_fraction for r in pooled[4:]])
    # the same stationary "mouse" (days 5-14: 0.41 of windows reach the study rule's threshold, 0.50 the
    # pooled rule's), made harder day after day by the ratchet alone
    assert late_stricter < 0.45 and late_stricter < late_pooled - 0.05
    assert abs(late_pooled - TARGET) < 0.05
    late_margin = np.mean([r.achieved_fraction for r in margin[4:]])
    assert abs(late_margin - TARGET) < 0.05 and late_stricter < late_margin - 0.05
    # the margin rule used yesterday's floor only where today's threshold fell below it
    for r in margin[1:]:
        assert r.threshold_z == pytest.approx(max(r.threshold_today_z, r.floor_z))
    assert pooled[0].threshold == stricter[0].threshold  # day 1 is today's calibration either way


def test_the_pooled_threshold_is_the_mean_of_the_last_days_own_thresholds() -> None:
    x = _baseline(7)
    today = calibrate(x, window_frames=WINDOW, n_windows=N_WINDOWS, target_fraction=TARGET,
                      rng=np.random.default_rng(1))
    res = calibrate(x, window_frames=WINDOW, n_windows=N_WINDOWS, target_fraction=TARGET,
                    rng=np.random.default_rng(1), rule="pooled", previous_z=(9.0, 1.0, 1.2), pool_days=3,
                    carried_z=1.1)
    pool = [1.0, 1.2, today.threshold_today_z]  # the oldest day (9.0) has left the pool
    assert res.days_pooled == 3 and res.pooled_z == pytest.approx(np.mean(pool))
    assert res.threshold_z == pytest.approx(max(np.mean(pool), res.floor_z))
    assert res.floor_z == pytest.approx(1.1 - NOISE_MARGIN_SE * np.std(pool, ddof=1) / math.sqrt(3))
    # in the readout's own units: median + z * sigma, above the baseline minimum
    assert res.threshold == pytest.approx(res.baseline_median + res.threshold_z * res.noise_sigma - res.baseline_min)


def test_the_pooled_rule_refuses_a_drop_beyond_the_noise_margin() -> None:
    x = _baseline(8)
    res = calibrate(x, window_frames=WINDOW, n_windows=N_WINDOWS, target_fraction=TARGET,
                    rng=np.random.default_rng(2), rule="pooled", previous_z=(1.0, 1.0), pool_days=3, carried_z=6.0)
    assert res.pooled_z < 3.0 < res.floor_z  # yesterday's threshold was far stricter than anything pooled
    assert res.threshold_z == pytest.approx(res.floor_z)
    assert res.threshold_z < 6.0  # ... and difficulty fell only by the margin


def test_the_quantile_error_of_uniform_window_maxima_is_worked_out_by_hand() -> None:
    values = np.linspace(0.0, 1.0, 100001)  # density 1: the error is sqrt(p (1 - p) / n)
    assert quantile_standard_error(values, 0.5, independent=25) == pytest.approx(math.sqrt(0.25 / 25), rel=1e-4)
    assert quantile_standard_error(values, 0.2, independent=16) == pytest.approx(math.sqrt(0.8 * 0.2 / 16), rel=1e-4)
    assert quantile_standard_error(np.ones(50), 0.5, independent=25) == 0.0  # tied maxima: no spread


def test_the_margin_rule_refuses_a_drop_beyond_twice_todays_own_error() -> None:
    x = _baseline(8)
    res = calibrate(x, window_frames=WINDOW, n_windows=N_WINDOWS, target_fraction=TARGET,
                    rng=np.random.default_rng(2), rule="margin", carried_z=6.0)
    z = (res.baseline_min + res.window_maxima - res.baseline_median) / res.noise_sigma
    se = quantile_standard_error(z, TARGET, independent=len(x) / WINDOW)
    assert res.floor_z == pytest.approx(6.0 - NOISE_MARGIN_SE * se)
    assert res.threshold_today_z < res.floor_z and res.threshold_z == pytest.approx(res.floor_z)


def test_the_margin_widens_to_the_days_own_spread_once_three_days_are_known() -> None:
    x = _baseline(8)
    res = calibrate(x, window_frames=WINDOW, n_windows=N_WINDOWS, target_fraction=TARGET,
                    rng=np.random.default_rng(2), rule="margin", carried_z=6.0, previous_z=(1.0, 3.0), pool_days=3)
    z = (res.baseline_min + res.window_maxima - res.baseline_median) / res.noise_sigma
    within = quantile_standard_error(z, TARGET, independent=len(x) / WINDOW)
    spread = float(np.std([1.0, 3.0, res.threshold_today_z], ddof=1))
    assert spread > within and res.days_pooled == 3
    assert res.floor_z == pytest.approx(6.0 - NOISE_MARGIN_SE * spread)


def test_carried_state_keeps_the_last_days_and_the_study_rule_carries_what_it_always_did() -> None:
    day = dataclasses.replace(_days("pooled", days=1)[0], threshold_z=1.5, threshold_today_z=1.25)
    c = carry_state(day, {"threshold_z": 1.4, "day": 3, "daily_z": [1.0, 1.1, 1.2, 1.3]}, pool_days=5)
    assert c == {"threshold_z": 1.5, "day": 4, "daily_z": [1.1, 1.2, 1.3, 1.25]}
    day = dataclasses.replace(day, rule="stricter")
    assert carry_state(day, {"threshold_z": 1.4, "day": 3}, pool_days=5) == {"threshold_z": 1.5, "day": 4}


def test_a_fixed_threshold_is_used_as_given_and_its_window_fraction_reported() -> None:
    x = _baseline(9)
    res = calibrate(x, window_frames=WINDOW, n_windows=N_WINDOWS, target_fraction=TARGET,
                    rng=np.random.default_rng(3), carried_z=5.0, fixed_threshold=0.8)
    assert res.rule == "fixed" and res.threshold == 0.8
    assert res.achieved_fraction == np.mean(res.window_maxima >= 0.8)
    assert res.threshold_today != 0.8  # today's calibration is still computed and reported


def _run_baseline(text: str, carried: dict[str, Any] | None = None) -> Task:
    task = Task(parse_protocol(text), carried=carried)
    rng = np.random.default_rng(4)
    for i in range(100):
        task.step(Readout(frame=i, readout=float(rng.normal()), readout_raw=0.0))
    return task


def test_the_protocol_chooses_the_rule_and_the_task_carries_it_forward() -> None:
    text = protocol_text(calibration="windows = 50\ntarget_hit_fraction = 0.5\nacross_days = 'pooled'\npool_days = 3")
    task = _run_baseline(text, carried={"threshold_z": 0.5, "day": 3, "daily_z": [0.4, 0.6]})
    cal = task.calibration
    assert cal is not None and cal.rule == "pooled" and cal.days_pooled == 3
    assert cal.pooled_z == pytest.approx(np.mean([0.4, 0.6, cal.threshold_today_z]))
    assert cal.summary()["previous_z"] == [0.4, 0.6]  # in the calibration event: a replay can rebuild its input
    assert task.carry_forward() == {"threshold_z": cal.threshold_z, "day": 4, "daily_z": [0.6, cal.threshold_today_z]}
    fixed = _run_baseline(protocol_text(calibration="windows = 50\nfixed_threshold = 0.25"))
    assert fixed.calibration is not None and fixed.calibration.threshold == 0.25
    study = _run_baseline(protocol_text(), carried={"threshold_z": 0.5, "day": 2})
    assert study.calibration is not None and study.calibration.rule == "stricter"
    assert study.carry_forward() == {"threshold_z": study.calibration.threshold_z, "day": 3}
