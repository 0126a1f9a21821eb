"""The simulated mouse as a frame source: geometry, reference, motion truth, determinism, behaviour."""

from __future__ import annotations

import math

import numpy as np

from bcirig.config import Protocol
from bcirig.interfaces import MouseStage
from bcirig.messages import Feedback, Phase, Screen, TrialState
from bcirig.processing.pipeline import Pipeline
from bcirig.sim import SimulatedMouse
from tests.sim.conftest import short_protocol, sim_config


def test_frames_have_the_protocols_shape_and_dtype(protocol: Protocol) -> None:
    mouse = SimulatedMouse(protocol, sim_config(protocol, level="pixels"), seed=1)
    assert isinstance(mouse, MouseStage)
    frame = mouse.step(None)
    assert mouse.frame_shape == (2, 128, 128)
    assert frame.data.shape == (2, 128, 128)
    assert frame.data.dtype == np.uint16
    # PMT offset (100) + background (~120 counts) on a dark-adapted field: plausible raw values
    assert 150 < float(frame.data.mean()) < 400


def test_rois_are_the_true_somata_and_their_dendrites(protocol: Protocol) -> None:
    mouse = SimulatedMouse(protocol, sim_config(protocol), seed=1)
    rois = mouse.rois()
    somata = [r for r in rois if r.kind == "soma"]
    dendrites = [r for r in rois if r.kind == "dendrite"]
    assert [r.name for r in somata] == ["P+0", "P+1", "P+2", "P+3", "P-0", "P-1", "P-2", "P-3"]
    assert all(r.plane == 1 for r in somata)  # imaging.bci_plane
    assert [r.group for r in somata] == ["P+"] * 4 + ["P-"] * 4
    assert [r.parent for r in dendrites] == [r.name for r in somata]
    assert all(r.plane == 0 for r in dendrites)  # the other plane
    rois.validate(mouse.frame_shape)
    # each soma ROI sits on a bright soma of the reference image
    ref = mouse.reference_image()
    for r in somata:
        inside = ref[r.plane, r.y, r.x].mean() - 100.0  # minus the PMT offset
        assert inside > 1.5 * (np.median(ref[r.plane]) - 100.0)


def test_one_plane_without_dendrites() -> None:
    text_proto = short_protocol()
    import dataclasses

    one = dataclasses.replace(text_proto, imaging=dataclasses.replace(text_proto.imaging, planes=1, bci_plane=0))
    mouse = SimulatedMouse(one, sim_config(one), seed=1)
    assert [r.kind for r in mouse.rois()] == ["soma"] * 8


def test_reference_is_the_noise_free_expected_image(protocol: Protocol) -> None:
    cfg = sim_config(protocol, level="pixels", motion_px=0.0, lick_jitter_px=0.0, bleach_tau_s=1e9, drift=0.0)
    mouse = SimulatedMouse(protocol, cfg, seed=2)
    ref = mouse.reference_image()
    assert ref.dtype == np.float32 and ref.shape == (2, 128, 128)
    mean = np.mean([mouse.step(None).data.astype(np.float64) for _ in range(200)], axis=0)
    r = np.corrcoef(mean.ravel(), ref.ravel())[0, 1]
    assert r > 0.98
    assert abs(mean.mean() / ref.mean() - 1.0) < 0.03


def test_pipeline_recovers_the_true_motion(protocol: Protocol) -> None:
    cfg = sim_config(protocol, level="pixels", motion_px=2.0)
    mouse = SimulatedMouse(protocol, cfg, seed=3)
    pipe = Pipeline(protocol, mouse.rois(), mouse.reference_image())
    true, found = [], []
    for i in range(300):
        f = mouse.step(None)
        true.append(f.truth["shift"])
        found.append(pipe.process(f.data, i).shift)
    true_a, found_a = np.array(true, float), np.array(found, float)
    assert np.abs(true_a).max() >= 2  # the brain did move
    assert np.abs(found_a - true_a).max() <= 0.25


def test_same_seed_same_frames_other_seed_other_frames(protocol: Protocol) -> None:
    cfg = sim_config(protocol, level="pixels")
    a, b, c = (SimulatedMouse(protocol, cfg, seed=s) for s in (7, 7, 8))
    for _ in range(20):
        fa, fb, fc = a.step(None), b.step(None), c.step(None)
        assert np.array_equal(fa.data, fb.data)
        assert fa.truth["shift"] == fb.truth["shift"]
    assert not np.array_equal(fa.data, fc.data)


def _reward_feedback(frame: int) -> Feedback:
    return Feedback(frame=frame, phase=Phase.CLOSED_LOOP, state=TrialState.HIT_HOLD, screen=Screen.GRATING,
                    angle_deg=90.0, reward=True)


def test_a_reward_makes_the_mouse_lick(protocol: Protocol) -> None:
    cfg = sim_config(protocol)
    mouse = SimulatedMouse(protocol, cfg, seed=4)
    before = sum(mouse.step_traces(None).truth["licks"] for _ in range(300))  # 10 s spontaneous
    mouse.step_traces(_reward_feedback(300))
    after = sum(mouse.step_traces(None).truth["licks"] for _ in range(60))  # 2 s after the sugar
    # spontaneous ~0.3 Hz -> ~3 licks in 10 s; consummatory 7 Hz decaying over 2 s -> ~9 licks in 2 s
    assert before < 10
    assert after >= 4
    assert after / 2.0 > 2 * before / 10.0


def test_state_round_trip_keeps_the_same_animal(protocol: Protocol) -> None:
    cfg = sim_config(protocol)
    day1 = SimulatedMouse(protocol, cfg, seed=11)
    state = day1.finish_day()
    day2 = SimulatedMouse(protocol, cfg, seed=12, state=state)
    assert state.day == 1
    assert [(s.cy, s.cx) for s in day2.sources] == [(s.cy, s.cx) for s in day1.sources]
    assert np.array_equal(day2.optics.base, day1.optics.base)  # same tissue, same cells
    # the expected image differs only by the day's activity level
    assert np.corrcoef(day2.reference_image().ravel(), day1.reference_image().ravel())[0, 1] > 0.97
    assert math.isfinite(state.value)
