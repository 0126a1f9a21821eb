"""Whole days through the real task and pipeline (traces level): calibrated chance, and learning."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bcirig.config import Protocol
from bcirig.sim.session import run_day
from tests.sim.conftest import short_protocol, sim_config


def _protocol() -> Protocol:
    # 200 s baseline and 5-s trials: ~40 independent baseline windows, so the calibration's own
    # sampling error (which a 12000-frame baseline with 29-s trials also has) stays small.
    p = short_protocol(baseline=6000, trials=40)
    return dataclasses.replace(p, trials=dataclasses.replace(p.trials, length_frames=150))


@pytest.fixture(scope="module")
def days() -> dict[str, list[list[tuple[float, float]]]]:
    """(hit rate, calibrated chance) per mouse per day: 8 naive mice x 1 day, 3 learners x 2 days."""
    proto = _protocol()
    out: dict[str, list[list[tuple[float, float]]]] = {}
    for rule, mice, n_days in (("none", 8, 1), ("vectorized", 3, 2)):
        cfg = sim_config(proto, rule=rule, learning_rate=0.0005)
        out[rule] = []
        for m in range(mice):
            state, carried, per_day = None, None, []
            for d in range(n_days):
                res = run_day(proto, cfg, seed=300 + 10 * m + d, state=state, carried=carried, keep_arrays=False)
                state, carried = res.state, res.carried
                per_day.append((res.summary["hit_rate"], res.calibration["achieved_fraction"]))
            out[rule].append(per_day)
    return out


def test_no_learning_mouse_hits_at_the_calibrated_chance(days: dict[str, list[list[tuple[float, float]]]]) -> None:
    hits = np.array([d[0][0] for d in days["none"]])
    chance = np.array([d[0][1] for d in days["none"]])
    assert np.all(chance <= 0.5) and chance.mean() > 0.45  # the calibration met its 50 % target
    # 8 mice x 40 trials; day-to-day SD ~0.13 (binomial + calibration sampling): SE ~0.045
    assert abs(hits.mean() - 0.5) < 0.12
    assert abs(hits.mean() - chance.mean()) < 0.12


def test_vectorized_mice_learn_above_chance(days: dict[str, list[list[tuple[float, float]]]]) -> None:
    naive = np.mean([d[0][0] for d in days["none"][:3]])  # the same three animals, not learning
    for mouse in days["vectorized"]:
        (_, _), (hit2, chance2) = mouse
        assert hit2 > chance2 + 0.15  # each learner, on day 2, against that day's calibrated chance
    learned = np.mean([m[1][0] for m in days["vectorized"]])
    chance = np.mean([m[1][1] for m in days["vectorized"]])
    assert learned > chance + 0.25
    assert learned > naive + 0.1
