"""The brain: Dale's principle after learning, feedback-driven firing, and what each rule changes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from bcirig.config import Protocol
from bcirig.messages import Feedback, Phase, Screen, TrialState
from bcirig.sim import SimConfig, SimulatedMouse, dale_violations
from bcirig.sim.brain import build_anatomy
from bcirig.sim.session import DayResult, run_day
from tests.sim.conftest import short_protocol, sim_config


def _grating(angle: float) -> Feedback:
    return Feedback(phase=Phase.CLOSED_LOOP, state=TrialState.ACTIVE, screen=Screen.GRATING, angle_deg=angle)


def _bci_rates(mouse: SimulatedMouse, fb: Feedback | None, frames: int = 600) -> np.ndarray:
    """Mean rate (Hz) of each BCI unit under a constant feedback, after 1 s to settle."""
    for _ in range(30):
        mouse.step_traces(fb)
    return np.asarray(np.mean([mouse.step_traces(fb).truth["rates"] for _ in range(frames)], axis=0), dtype=np.float64)


def test_network_obeys_dale_at_birth(protocol: Protocol) -> None:
    cfg = sim_config(protocol)
    anatomy, w = build_anatomy(cfg, protocol, seed=1)
    exc = anatomy.excitatory
    assert 0.15 < 1 - exc.mean() < 0.25  # ~20 % inhibitory units
    assert (w[:, exc] >= 0).all() and (w[:, ~exc] <= 0).all()
    assert np.abs(np.linalg.eigvals(w)).max() < 1.0  # stable recurrent dynamics


def test_naive_bci_units_ignore_the_grating(protocol: Protocol) -> None:
    """Calibrated chance needs trial activity to look like the grey baseline before learning."""
    mouse = SimulatedMouse(protocol, sim_config(protocol, rule="none"), seed=1)
    grey = _bci_rates(mouse, None)
    target = _bci_rates(mouse, _grating(90.0))
    assert np.abs(target - grey).max() < 1.0  # Hz, against rates of a few Hz and noise of 4 Hz


@dataclass
class Trained:
    """One short day per rule of the same animal."""

    protocol: Protocol
    runs: dict[str, tuple[SimConfig, DayResult]]


@pytest.fixture(scope="module")
def trained() -> Trained:
    """One short day per rule, same animal (anatomy seed), strong learning rate to see the effect fast."""
    proto = short_protocol(baseline=1500, trials=20)
    runs = {}
    for rule in ("vectorized", "blocked", "scalar", "none"):
        cfg = sim_config(proto, rule=rule, learning_rate=0.002, scalar_learning_rate=0.002)
        runs[rule] = (cfg, run_day(proto, cfg, seed=21, keep_arrays=False))
    return Trained(proto, runs)


def test_dale_holds_after_learning(trained: Trained) -> None:
    proto = trained.protocol
    for rule in ("vectorized", "scalar"):
        cfg, res = trained.runs[rule]
        assert res.state.history[-1]["abs_change"] > 0.01, rule  # the weights did learn
        assert dale_violations(res.state, cfg, proto) == 0, rule


def test_vectorized_learning_has_the_groups_signs(trained: Trained) -> None:
    proto = trained.protocol
    cfg, res = trained.runs["vectorized"]
    anatomy, w0 = build_anatomy(cfg, proto, res.state.anatomy_seed)
    dw = (res.state.w_rec - w0)[: anatomy.n_bci][:, anatomy.plastic]
    exc = anatomy.excitatory[anatomy.plastic]
    plus, minus = anatomy.sign > 0, anatomy.sign < 0
    # P+ gains excitation from the feedback-tuned units, P- gains inhibition from them
    assert dw[plus][:, exc].sum() > 0 and dw[plus][:, ~exc].sum() == 0
    assert dw[minus][:, ~exc].sum() < 0 and dw[minus][:, exc].sum() == 0
    # and only the plastic (sensory) synapses changed
    other = np.ones(anatomy.n, bool)
    other[anatomy.plastic] = False
    assert np.array_equal(res.state.w_rec[:, other], w0[:, other])


def test_blocked_and_none_do_not_learn(trained: Trained) -> None:
    proto = trained.protocol
    for rule in ("blocked", "none"):
        cfg, res = trained.runs[rule]
        _, w0 = build_anatomy(cfg, proto, res.state.anatomy_seed)
        assert np.array_equal(res.state.w_rec, w0), rule


def test_learned_feedback_drives_the_bci_units(trained: Trained) -> None:
    """The closed loop is real: after learning the target grating raises P+ and lowers P- firing."""
    proto = trained.protocol
    cfg, res = trained.runs["vectorized"]
    mouse = SimulatedMouse(proto, cfg, seed=99, state=res.state.copy())
    grey = _bci_rates(mouse, None)
    target = _bci_rates(mouse, _grating(90.0))
    far = _bci_rates(mouse, _grating(0.0))
    gain = target - grey
    assert gain[:4].mean() > 2.0  # P+ up by more than 2 Hz
    assert gain[4:].mean() < -0.5  # P- down
    # orientation-specific: the far-from-target grating moves them much less
    assert abs((far - grey)[:4].mean()) < 0.5 * gain[:4].mean()


def _dendrite_response(rule: str) -> tuple[float, float]:
    """Mean change of P+ and P- dendrite dF/F in the second after a reward vs the second before (20 rewards)."""
    proto = short_protocol()
    mouse = SimulatedMouse(proto, sim_config(proto, rule=rule), seed=3)
    dend = np.flatnonzero(mouse.src_dendrite)
    sign = mouse.brain.anatomy.sign
    reward = Feedback(phase=Phase.CLOSED_LOOP, state=TrialState.HIT_HOLD, screen=Screen.GRATING, angle_deg=90.0,
                      reward=True)
    change = []
    for _ in range(20):
        before = np.mean([mouse.step_traces(None).truth["dff"][dend] for _ in range(30)], axis=0)
        mouse.step_traces(reward)
        after = np.mean([mouse.step_traces(None).truth["dff"][dend] for _ in range(30)], axis=0)
        change.append(after - before)
        for _ in range(60):
            mouse.step_traces(None)
    d = np.mean(change, axis=0)
    return float(d[sign > 0].mean()), float(d[sign < 0].mean())


def test_dendrites_carry_opposing_instructive_signals() -> None:
    plus, minus = _dendrite_response("vectorized")
    assert plus > 0.05 and minus < -0.04  # dF/F, on a resting dendritic dF/F of ~0.3
    for rule in ("blocked", "scalar"):  # blocked: signal removed; scalar: no per-neuron signal at all
        plus, minus = _dendrite_response(rule)
        assert abs(plus) < 0.03 and abs(minus) < 0.03, rule
