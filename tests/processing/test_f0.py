"""F0 rules: the incremental percentile equals np.percentile over the same window, frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from bcirig.processing.f0 import KdeModeF0, PercentileF0, RunningMeanF0, kde_mode


@pytest.mark.parametrize(("window", "pct"), [(37, 10.0), (8, 50.0), (1, 10.0), (25, 0.0), (25, 100.0), (30, 33.3)])
def test_percentile_matches_numpy_every_frame_including_warm_up(window: int, pct: float) -> None:
    rng = np.random.default_rng(window)
    data = rng.normal(100, 20, size=(150, 4))
    rule = PercentileF0(4, window, pct)
    for t in range(len(data)):
        got = rule.update(data[t])
        win = data[max(0, t - window + 1) : t + 1]  # warm-up: all frames so far
        np.testing.assert_array_equal(got, np.percentile(win, pct, axis=0))


def test_float32_window_matches_numpy_on_the_rounded_values() -> None:
    rng = np.random.default_rng(12)
    data = rng.normal(1000, 30, size=(120, 5))
    rule = PercentileF0(5, 40, 10.0, np.float32)
    rounded = data.astype(np.float32).astype(np.float64)
    for t in range(len(data)):
        got = rule.update(data[t])
        np.testing.assert_array_equal(got, np.percentile(rounded[max(0, t - 39) : t + 1], 10.0, axis=0))


def test_percentile_with_ties_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 4, size=(200, 3)).astype(np.float64)  # many exact ties
    rule = PercentileF0(3, 20, 10.0)
    for t in range(len(data)):
        got = rule.update(data[t])
        np.testing.assert_array_equal(got, np.percentile(data[max(0, t - 19) : t + 1], 10.0, axis=0))


def test_percentile_hand_example() -> None:
    rule = PercentileF0(1, 5, 10.0)
    out = [float(rule.update(np.array([v]))[0]) for v in (5.0, 1.0, 3.0, 2.0, 4.0, 10.0)]
    # window 5,1,3,2,4 -> sorted 1..5, rank 0.4 -> 1.4; then 1,3,2,4,10 -> sorted 1,2,3,4,10 -> 1.4
    assert out[0] == 5.0
    assert out[1] == pytest.approx(1.4)  # [1, 5]: rank 0.1 -> 1 + 0.1*4
    assert out[4] == pytest.approx(1.4)
    assert out[5] == pytest.approx(1.4)


def test_running_mean_matches_window_mean() -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(50, 5, size=(120, 2))
    rule = RunningMeanF0(2, 16)
    for t in range(len(data)):
        np.testing.assert_allclose(rule.update(data[t]), data[max(0, t - 15) : t + 1].mean(axis=0), rtol=1e-12)


def test_kde_mode_finds_the_dense_cluster() -> None:
    rng = np.random.default_rng(5)
    # 80% of frames at the resting level 100, 20% in transients around 160
    x = np.concatenate([rng.normal(100, 3, 800), rng.normal(160, 15, 200)])
    assert kde_mode(x) == pytest.approx(100, abs=2.0)
    rule = KdeModeF0(1, 1000)
    for v in x:
        f0 = rule.update(np.array([v]))
    assert f0[0] == pytest.approx(100, abs=2.0)
    assert np.percentile(x, 50) > 100.5  # the mean/median would be pulled up by the transients


def test_protocol_window_is_four_trials_and_rule_kind() -> None:
    from bcirig.processing.f0 import make_f0_rule

    from .conftest import make_protocol

    rule = make_f0_rule(make_protocol(f0='kind = "percentile"\npercentile = 10.0'), 3)
    assert isinstance(rule, PercentileF0) and rule.window == 4 * 20  # trials.length_frames = 20
    assert isinstance(make_f0_rule(make_protocol(f0='kind = "running_mean"\nwindow_frames = 7'), 3), RunningMeanF0)
    assert isinstance(make_f0_rule(make_protocol(f0='kind = "kde_mode"'), 3), KdeModeF0)


@pytest.mark.parametrize("trend", [0.0, 0.5, -0.5])
def test_banded_percentile_for_many_rois_matches_numpy_and_the_per_roi_path(trend: float) -> None:
    # 300 ROIs, every frame from the first (warm-up) to well past a full window; a drift makes the
    # percentile's rank wander through the bands, so bands run out and are rebuilt. The window is
    # long enough that the 10th percentile's band does not start at rank 0 (values pass below it).
    rng = np.random.default_rng(11)
    n, window, frames = 300, 1200, 1900
    data = rng.normal(1000, 40, size=(frames, n)) + trend * np.arange(frames)[:, None]
    data[:, :60] = rng.integers(0, 5, size=(frames, 60))  # 60 ROIs with many exact ties
    banded = PercentileF0(n, window, 10.0, np.float32, banded=True)
    per_roi = PercentileF0(n, window, 10.0, np.float32, banded=False)
    rounded = data.astype(np.float32).astype(np.float64)
    for t in range(frames):
        got = banded.update(data[t])
        np.testing.assert_array_equal(got, np.percentile(rounded[max(0, t - window + 1) : t + 1], 10.0, axis=0))
        np.testing.assert_array_equal(got, per_roi.update(data[t]))


@pytest.mark.parametrize(("window", "pct"), [(1, 10.0), (5, 50.0), (60, 0.0), (60, 100.0), (500, 90.0)])
def test_banded_percentile_edge_windows_and_percentiles(window: int, pct: float) -> None:
    rng = np.random.default_rng(window)
    data = rng.normal(100, 20, size=(3 * window + 40, 70))
    rule = PercentileF0(70, window, pct, banded=True)
    for t in range(len(data)):
        want = np.percentile(data[max(0, t - window + 1) : t + 1], pct, axis=0)
        np.testing.assert_array_equal(rule.update(data[t]), want)


def test_many_rois_choose_the_banded_path() -> None:
    assert PercentileF0(500, 3480, 10.0).banded and not PercentileF0(10, 3480, 10.0).banded
