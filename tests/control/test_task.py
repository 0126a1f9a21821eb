"""The trial state machine, frame by frame, on hand-built readouts."""

from collections.abc import Iterable

import numpy as np
import pytest

from bcirig.config import parse_protocol
from bcirig.control import CalibrationResult, Task, activity_bin, grating_angle, tone_frequency
from bcirig.interfaces import TaskStep
from bcirig.messages import Action, EventKind, Outcome, Phase, Readout, Screen, Sound, TrialState
from tests.conftest import protocol_text


def make_task(**sections: str) -> Task:
    return Task(parse_protocol(protocol_text(**sections)))


def run(task: Task, values: Iterable[float], start: int = 0) -> list[TaskStep]:
    steps = []
    for i, v in enumerate(values):
        steps.append(task.step(Readout(frame=start + i, readout=float(v))))
    return steps


def calibrated(task: Task, lo: float = 0.0, hi: float = 1.0) -> CalibrationResult:
    """Feed a baseline ramp lo..hi so baseline_min = lo and the threshold is known to lie in (lo, hi]."""
    n = task.p.baseline.frames
    run(task, np.linspace(lo, hi, n))
    assert task.phase is Phase.CLOSED_LOOP and task.calibration is not None
    return task.calibration


def test_grating_bins_run_linearly_from_baseline_minimum_to_threshold() -> None:
    cfg = parse_protocol(protocol_text()).feedback  # 7 steps of 15 deg, target 90
    assert [grating_angle(r, 1.4, cfg) for r in (0.0, 0.19, 0.2, 0.7, 1.19, 1.2, 1.39, 5.0)] == [
        0.0, 0.0, 15.0, 45.0, 75.0, 90.0, 90.0, 90.0]
    assert activity_bin(-0.5, 1.0, 7) == 0
    assert activity_bin(float("nan"), 1.0, 7) == 0


def test_tone_is_linear_in_octaves() -> None:
    cfg = parse_protocol(protocol_text(feedback='kind = "tone"\ntone_min_hz = 5000.0\ntone_max_hz = 20000.0')).feedback
    assert tone_frequency(0.0, 1.0, cfg) == pytest.approx(5000.0)
    assert tone_frequency(0.5, 1.0, cfg) == pytest.approx(10000.0)  # one of two octaves
    assert tone_frequency(2.0, 1.0, cfg) == pytest.approx(20000.0)


def test_baseline_then_calibration_event_then_grey_trial_start() -> None:
    task = make_task()
    steps = run(task, np.linspace(0.0, 1.0, 100))
    assert all(s.feedback.phase is Phase.BASELINE for s in steps)
    assert all(s.feedback.screen is Screen.GREY for s in steps)
    names = [e.name for s in steps for e in s.events]
    assert names[0] is EventKind.SESSION_START and EventKind.CALIBRATION in names
    assert steps[-1].events[-1].data == {"phase": "closed_loop"}
    first = task.step(Readout(frame=100, readout=0.1))
    assert first.feedback.trial == 1 and first.feedback.state is TrialState.GREY
    assert first.events[0].name is EventKind.TRIAL_START


def test_hit_holds_target_rewards_on_third_hold_frame_then_grey_iti() -> None:
    task = make_task()
    cal = calibrated(task)
    t = cal.threshold
    grey = run(task, [0.5] * 5, start=100)  # 5 grey frames: not evaluated even if above threshold
    assert [s.feedback.state for s in grey] == [TrialState.GREY] * 5
    active = run(task, [0.01, t * 0.5], start=105)
    assert active[0].feedback.screen is Screen.GRATING and active[0].feedback.angle_deg == 0.0
    assert active[1].feedback.angle_deg == 45.0  # bin 3 of 7 at half the threshold
    hold = run(task, [t + 0.01] + [0.0] * 5, start=107)  # crossing frame is hold frame 1
    assert [s.feedback.state for s in hold] == [TrialState.HIT_HOLD] * 6
    assert all(s.feedback.angle_deg == 90.0 for s in hold)
    rewarded = [i for i, s in enumerate(hold) if s.commands]
    assert rewarded == [2]  # the 3rd frame of the hold
    cmd = hold[2].commands[0]
    assert cmd.action is Action.REWARD and cmd.reward_ul == 4.0 and cmd.frame == 109
    assert hold[2].feedback.reward and not hold[1].feedback.reward
    end = next(e for e in hold[0].events if e.name is EventKind.TRIAL_END)
    assert end.data["outcome"] == "hit" and end.data["frames"] == 8  # frames 100..107
    iti = run(task, [0.5] * 4, start=113)
    assert [s.feedback.state for s in iti] == [TrialState.ITI] * 4
    assert all(s.feedback.screen is Screen.GREY for s in iti)
    nxt = task.step(Readout(frame=117, readout=0.5))
    assert nxt.feedback.trial == 2 and nxt.feedback.state is TrialState.GREY


def test_abort_below_baseline_minimum_shows_zero_degrees_and_noise() -> None:
    task = make_task()
    calibrated(task, lo=0.2, hi=1.0)
    run(task, [0.3] * 6, start=100)
    ab = run(task, [0.1] + [0.3] * 4, start=106)
    assert ab[0].feedback.state is TrialState.ABORT_HOLD
    assert ab[0].feedback.angle_deg == 0.0 and ab[0].feedback.sound is Sound.WHITE_NOISE
    assert ab[1].feedback.sound is Sound.NONE
    assert all(not s.commands for s in ab)
    assert task.trials[0].outcome is Outcome.ABORT


def test_timeout_after_trial_length_then_black_iti_with_noise_cue() -> None:
    task = make_task()
    cal = calibrated(task)
    steps = run(task, [cal.threshold * 0.5] * 40, start=100)  # never crosses; length 40 frames
    assert steps[-1].feedback.trial == 1
    assert task.trials[0].outcome is Outcome.TIMEOUT and task.trials[0].outcome_frame == 139
    iti = run(task, [0.5] * 7, start=140)
    assert all(s.feedback.screen is Screen.BLACK for s in iti)
    assert [s.feedback.sound for s in iti].count(Sound.WHITE_NOISE) == 1
    assert iti[1].feedback.sound is Sound.WHITE_NOISE  # noise_at_iti_frame = 2
    assert task.step(Readout(frame=147, readout=0.5)).feedback.trial == 2


def test_session_ends_after_the_last_trial_and_then_stays_done() -> None:
    task = make_task()
    cal = calibrated(task)
    frame = 100
    while not task.done and frame < 1000:
        step = task.step(Readout(frame=frame, readout=cal.threshold * 0.5))
        frame += 1
    assert task.done and len(task.trials) == 3
    assert any(e.name is EventKind.SESSION_END for e in step.events)
    assert task.summary()["timeouts"] == 3 and task.summary()["hit_rate"] == 0.0
    after = task.step(Readout(frame=frame, readout=99.0))
    assert after.feedback.phase is Phase.DONE and not after.commands


def test_invalid_readout_is_not_evaluated_and_counted() -> None:
    task = make_task()
    calibrated(task)
    run(task, [0.5] * 6, start=100)
    s = task.step(Readout(frame=106, valid=False, readout=float("nan")))
    assert s.feedback.state is TrialState.ACTIVE and not s.commands
    assert task.invalid_readouts == 1


def test_safe_state_greys_and_never_rewards_again() -> None:
    task = make_task()
    cal = calibrated(task)
    run(task, [0.5] * 6, start=100)
    s = task.safe(106, "node 'pipeline' died")
    assert s.feedback.screen is Screen.GREY and s.events[0].name is EventKind.SAFE_STATE
    after = run(task, [cal.threshold * 10] * 10, start=107)
    assert all(not a.commands and a.feedback.screen is Screen.GREY for a in after)
    assert task.done


def test_opto_with_reward_sends_one_combined_command() -> None:
    task = make_task(reward="volume_ul = 3.0\nopto = \"with_reward\"\nopto_ms = 20.0")
    cal = calibrated(task)
    steps = run(task, [0.5] * 6 + [cal.threshold + 1] * 3, start=100)
    cmds = [c for s in steps for c in s.commands]
    assert len(cmds) == 1 and cmds[0].action is Action.REWARD_OPTO
    assert cmds[0].reward_ul == 3.0 and cmds[0].opto_ms == 20.0


def test_same_readouts_same_decisions() -> None:
    a, b = make_task(), make_task()
    rng = np.random.default_rng(5)
    values = rng.normal(0.5, 0.3, 600)
    fa = [(s.feedback.state, str(s.feedback.angle_deg), len(s.commands)) for s in run(a, values)]
    fb = [(s.feedback.state, str(s.feedback.angle_deg), len(s.commands)) for s in run(b, values)]
    assert fa == fb
    assert any(state is TrialState.HIT_HOLD for state, _, _ in fa)  # the sequence exercises hits


# ------------------------------------------------------------------ issue 9, case 9: the trial table's reward frame
@pytest.mark.parametrize("reward_on", [3, 1, 6])
def test_each_hits_trial_end_names_its_reward_frame_and_the_reward_command_is_on_it(reward_on: int) -> None:
    task = make_task(trials="count = 12\nlength_frames = 40\ngrey_frames = 5",
                     **{"outcomes.hit": f"hold_frames = 6\nreward_on_hold_frame = {reward_on}\niti_frames = 4"})
    cal = calibrated(task)
    rng = np.random.default_rng(2)
    values = np.where(rng.random(800) < 0.03, cal.threshold + 0.5, 0.5 * cal.threshold)  # hits and timeouts
    steps = run(task, values, start=100)
    ends = [e for s in steps for e in s.events if e.name is EventKind.TRIAL_END]
    hits = [e for e in ends if e.data["outcome"] == "hit"]
    assert len(hits) >= 3 and len(hits) < len(ends)  # hits, and trials without one
    assert [e.data["reward_frame"] for e in hits] == [e.frame + reward_on - 1 for e in hits]
    assert all(e.data["reward_frame"] == -1 for e in ends if e.data["outcome"] != "hit")
    commands = [c for s in steps for c in s.commands]
    assert [c.frame for c in commands] == [e.data["reward_frame"] for e in hits]
    # the task keeps what its events said: the table replay rebuilds is the one the recorder wrote
    assert [(t.outcome_frame, t.reward_frame) for t in task.trials if t.outcome is not None] == [
        (e.frame, e.data["reward_frame"]) for e in ends]


def test_a_safe_state_before_the_reward_frame_says_the_reward_was_withheld() -> None:
    task = make_task()  # reward on hold frame 3
    cal = calibrated(task)
    run(task, [0.5] * 5, start=100)  # grey
    hold = run(task, [cal.threshold + 1], start=105)  # the hit: hold frame 1
    end = next(e for e in hold[0].events if e.name is EventKind.TRIAL_END)
    assert end.data["reward_frame"] == 107
    s = task.safe(105, "frames stopped")
    assert s.events[0].data == {"reason": "frames stopped", "reward_withheld": {"trial": 1, "reward_frame": 107}}
    assert not any(a.commands for a in run(task, [cal.threshold + 1] * 5, start=106))
    task2 = make_task()
    cal2 = calibrated(task2)
    run(task2, [0.5] * 5 + [cal2.threshold + 1] * 3, start=100)  # rewarded on frame 107
    assert task2.safe(108, "frames stopped").events[0].data == {"reason": "frames stopped"}
