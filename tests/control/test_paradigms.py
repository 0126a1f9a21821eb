"""Each paradigm's rules on constructed readouts: the protocol files as written, with shorter phases.

The protocol files are the ones shipped (``protocols/*.toml``); only lengths are shortened with the same
``KEY=VALUE`` changes ``bcirig replay --set`` applies, so the rules under test are the files' own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bcirig.config import load_protocol, parse_protocol
from bcirig.control.calibration import HitRules, baseline_hits
from bcirig.control.task import TRANSITIONS, Task, TaskError, _Frame
from bcirig.interfaces import TaskStep
from bcirig.messages import Action, EventKind, OperatorCommand, Outcome, Phase, Readout, Screen, Sound, TrialState
from bcirig.replay import apply_changes
from bcirig.schema import ConfigError
from tests.conftest import protocol_text

ROOT = Path(__file__).resolve().parents[2]


def paradigm(name: str, *changes: str) -> Any:
    text = (ROOT / "protocols" / f"{name}.toml").read_text()
    proto, _, _ = apply_changes(text, list(changes), f"protocols/{name}.toml")
    return proto


def with_phase(proto: Any, index: int, **changes: Any) -> Any:
    """The protocol with one of its listed [[phases]] changed (``--set`` has no syntax for list items)."""
    phases = list(proto.phases)
    phases[index] = dataclasses.replace(phases[index], **changes)
    return dataclasses.replace(proto, phases=tuple(phases))


def run(task: Task, values: Any, start: int = 0) -> list[TaskStep]:
    return [task.step(Readout(frame=start + i, readout=float(v))) for i, v in enumerate(values)]


def events(steps: list[TaskStep], kind: EventKind) -> list[Any]:
    return [e for s in steps for e in s.events if e.name is kind]


def ramp_baseline(task: Task, n: int) -> list[TaskStep]:
    """A baseline ramp 0..1: baseline minimum 0, so readouts below are the trial's norm directly."""
    return run(task, np.linspace(0.0, 1.0, n))


def threshold(task: Task) -> float:
    """The threshold the task calibrated (it must have)."""
    assert task.calibration is not None, "the task has not calibrated"
    return task.calibration.threshold


# ------------------------------------------------------------------------------------------- phases as data
def test_the_default_plan_is_francionis_baseline_calibration_closed_loop() -> None:
    plan = load_protocol(ROOT / "protocols" / "francioni2026.toml").phase_plan()
    assert [(p.kind, p.frames, p.trials) for p in plan] == [
        (Phase.BASELINE, 12000, 0), (Phase.CALIBRATION, 0, 0), (Phase.CLOSED_LOOP, 0, 50)]


@pytest.mark.parametrize("phases,message", [
    ('[[phases]]\nkind = "warmup"', "phases[0].kind = 'warmup': expected one of 'waiting', "),
    ('[[phases]]\nkind = "baseline"\n[[phases]]\nkind = "closed_loop"',
     "phases[1].kind = 'closed_loop': expected a calibration before closed_loop (its threshold); phases so far: "
     "baseline"),
    ('[[phases]]\nkind = "baseline"\n[[phases]]\nkind = "calibration"\n[[phases]]\nkind = "degradation"',
     "phases[2].kind = 'degradation': expected closed_loop before degradation"),
    ('[[phases]]\nkind = "baseline"\n[[phases]]\nkind = "calibration"\n[[phases]]\nkind = "closed_loop"\n'
     '[[phases]]\nkind = "reinstatement"', "phases[3].kind = 'reinstatement': expected degradation before"),
    ('[[phases]]\nkind = "calibration"', "phases[0].kind = 'calibration': expected a baseline before the calibration"),
    ('[[phases]]\nkind = "baseline"\n[[phases]]\nkind = "alignment"',
     "phases[1].kind = 'alignment': expected alignment only first"),
    ('[[phases]]\nkind = "baseline"\ntrials = 3', "phases[0].trials = 3: expected nothing: a baseline phase has no"),
    ('[[phases]]\nkind = "spontaneous"', "phases[0].frames = (missing): expected the spontaneous phase's length"),
    ('[[phases]]\nkind = "done"', "phases[0].kind = 'done': expected a phase a protocol can list: alignment, "),
    ('[[phases]]\nkind = "baseline"\nlength = 3', "phases[0].length = 3: expected no such key"),
])
def test_unknown_or_out_of_order_phases_are_one_line_errors(phases: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_protocol(protocol_text() + phases, "p.toml")
    assert str(err.value).startswith(f"p.toml: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_a_phase_from_a_later_day_runs_only_from_that_day() -> None:
    proto = paradigm("clancy2014")
    assert [p.kind for p in proto.phase_plan(7)] == [Phase.BASELINE, Phase.CALIBRATION, Phase.CLOSED_LOOP]
    assert [p.kind for p in proto.phase_plan(8)][-2:] == [Phase.DEGRADATION, Phase.REINSTATEMENT]
    assert Task(proto, carried={"day": 8}).plan[-1].kind is Phase.REINSTATEMENT


def test_an_impossible_transition_raises() -> None:
    task = Task(parse_protocol(protocol_text()))
    assert TrialState.HIT_HOLD not in TRANSITIONS[TrialState.NONE]
    with pytest.raises(TaskError, match="no transition none -> hit_hold"):
        task._go(_Frame(frame=0, value=0.0, norm=0.0), TrialState.HIT_HOLD)


def test_spontaneous_and_marker_phases_run_in_order_with_their_screens() -> None:
    text = protocol_text(baseline="frames = 60") + (
        '[[phases]]\nkind = "spontaneous"\nframes = 10\nscreen = "black"\n'
        '[[phases]]\nkind = "photostim_mapping"\nframes = 5\nname = "map1"\n'
        '[[phases]]\nkind = "baseline"\n[[phases]]\nkind = "calibration"\n'
        '[[phases]]\nkind = "closed_loop"\ntrials = 1\n')
    task = Task(parse_protocol(text))
    steps = run(task, np.linspace(0, 1, 75))
    phases = [(e.frame, e.data["phase"], e.data.get("name")) for e in events(steps, EventKind.PHASE)]
    # a phase event is recorded on the frame that ended the phase before it (frame 0 for the first)
    assert phases == [(0, "spontaneous", None), (9, "photostim_mapping", "map1"), (14, "baseline", None),
                      (74, "calibration", None), (74, "closed_loop", None)]
    assert {s.feedback.screen for s in steps[:10]} == {Screen.BLACK}
    assert {s.feedback.phase for s in steps[10:15]} == {Phase.PHOTOSTIM_MAPPING}
    # the calibration used the 60 baseline frames only (a ramp 0..1 over frames 15..74: minimum 0)
    cal = events(steps, EventKind.CALIBRATION)[0].data
    assert cal["baseline_min"] == pytest.approx(float(np.linspace(0, 1, 75)[15]))


# ------------------------------------------------------------------------------------------- operator
def test_an_operator_start_pause_resume_and_manual_reward_are_applied_on_the_next_frame_and_recorded() -> None:
    text = protocol_text() + ('[[phases]]\nkind = "baseline"\nstart = "operator"\n[[phases]]\nkind = "calibration"\n'
                              '[[phases]]\nkind = "closed_loop"\nstart = "operator"\n')
    task = Task(parse_protocol(text))
    waiting = run(task, [0.5] * 5)
    assert {s.feedback.state for s in waiting} == {TrialState.WAITING} and task.baseline == []
    task.operate(OperatorCommand.START_TRIALS, 1)  # the wrong start: refused, with the reason
    task.operate(OperatorCommand.START_BASELINE, 2)
    first = task.step(Readout(frame=5, readout=0.0))
    ops = [e.data for e in first.events if e.name is EventKind.OPERATOR]
    assert [(o["command_id"], o["applied"]) for o in ops] == [(1, False), (2, True)]
    assert "the waiting phase is baseline: use start_baseline" in ops[0]["reason"]
    steps = run(task, np.linspace(0.0, 1.0, 100)[1:], start=6)  # the baseline's other 99 frames
    assert len(task.baseline) == 100 and steps[-1].feedback.state is TrialState.NONE  # its last baseline frame
    assert task.state is TrialState.WAITING  # ... then the trials wait for the experimenter
    task.operate(OperatorCommand.START_TRIALS, 3)
    run(task, [0.0] * 8, start=105)  # the trial starts on the frame it is applied (grey 105..109, active from 110)
    assert (task.trials[0].start_frame, task.state) == (105, TrialState.ACTIVE)
    task.operate(OperatorCommand.PAUSE, 4)
    paused = run(task, [0.0] * 50, start=113)  # longer than the trial: no timeout while paused
    assert {s.feedback.state for s in paused} == {TrialState.PAUSED}
    assert {s.feedback.screen for s in paused} == {Screen.GREY} and task.trials[0].outcome is None
    frame_before = task.trial_frame
    task.operate(OperatorCommand.RESUME, 5)
    task.operate(OperatorCommand.REWARD, 6, 2.5)
    resumed = task.step(Readout(frame=163, readout=0.0))
    assert resumed.feedback.state is TrialState.ACTIVE and task.trial_frame == frame_before + 1
    assert [(c.action, c.reward_ul) for c in resumed.commands] == [(Action.REWARD, 2.5)]
    assert resumed.feedback.reward
    task.operate(OperatorCommand.FLUSH, 7, 0.0)
    refused = task.step(Readout(frame=164, readout=0.0))
    op = next(e.data for e in refused.events if e.name is EventKind.OPERATOR)
    assert not op["applied"] and "flush of 0.0 ms" in op["reason"] and not refused.commands


# ------------------------------------------------------------------------------------------- Clancy 2014
def test_clancy_tone_moves_in_8_octave_linear_steps_to_the_threshold() -> None:
    proto = paradigm("clancy2014", "baseline.frames=1000", "trials.count=1")
    task = Task(proto)
    ramp_baseline(task, 1000)
    t = threshold(task)
    steps = run(task, np.linspace(0.0, 0.999 * t, 800), start=1000)
    hz = sorted({round(s.feedback.tone_hz) for s in steps[1:] if s.feedback.sound is Sound.TONE})
    assert len(hz) == 8 and hz[0] == 6000 and hz[-1] == 20000
    octaves = np.diff(np.log2(hz))
    assert np.allclose(octaves, np.log2(20000 / 6000) / 7, rtol=1e-3)
    assert {s.feedback.screen for s in steps} == {Screen.GREY}  # a tone protocol shows no grating


def _day8(reward_frac: float = 1.0) -> tuple[Task, list[TaskStep], float]:
    proto = paradigm("clancy2014", "baseline.frames=1000", "trials.count=20", "trials.length_frames=100",
                     "outcomes.hit.iti_frames=10", "outcomes.timeout.iti_frames=10")
    proto = with_phase(with_phase(proto, 3, trials=200), 4, trials=20)
    task = Task(proto, carried={"day": 8})
    steps = ramp_baseline(task, 1000)
    t = threshold(task)
    rng = np.random.default_rng(0)
    frame = 1000
    while not task.done:  # a readout that crosses the threshold now and then
        v = t * 1.2 if rng.random() < 0.02 * reward_frac else t * 0.3
        steps.append(task.step(Readout(frame=frame, readout=float(v))))
        frame += 1
    return task, steps, t


def test_clancy_degradation_withholds_hit_rewards_and_rewards_at_random_at_the_earned_rate() -> None:
    task, steps, _ = _day8()
    by_phase = {p["name"]: p for p in task.summary()["phases"]}
    cl, dg, rs = by_phase["closed_loop"], by_phase["degradation"], by_phase["reinstatement"]
    assert cl["rewards"] == cl["hits"] > 0 and rs["rewards"] == rs["hits"] > 0
    deg_trials = [t for t in task.trials if t.phase is Phase.DEGRADATION]
    assert deg_trials and all(t.reward_frame == -1 for t in deg_trials if t.outcome is Outcome.HIT)
    free = events(steps, EventKind.UNCOUPLED_REWARD)
    assert len(free) == dg["rewards"] > 0
    rate = cl["rewards"] / cl["frames"]
    expected = rate * dg["frames"]  # Bernoulli per frame: mean and SD of the count
    assert abs(len(free) - expected) < 4 * np.sqrt(expected), (len(free), expected)
    commands = [c for s in steps for c in s.commands]
    assert all(c.action is Action.REWARD for c in commands)
    assert len(commands) == cl["rewards"] + dg["rewards"] + rs["rewards"]


# ------------------------------------------------------------------------------------------- Vendrell 2022
def test_vendrell_refractory_rule_needs_two_frames_below_half_threshold_before_the_next_hit() -> None:
    proto = paradigm("vendrell2022", "baseline.frames=1000", "trials.count=3", "readout.smoothing.frames=1",
                     "outcomes.hit.iti_frames=0", "calibration.rule=\"fixed\"", "calibration.fixed_threshold=1.0")
    task = Task(proto)
    ramp_baseline(task, 1000)
    assert threshold(task) == 1.0
    s = run(task, [1.5], start=1000)  # trial 1 starts (no grey) and hits at once
    assert task.trials[0].outcome is Outcome.HIT
    # trial 2: high all along -> no hit; one frame below T/2 is not enough; two are
    s = run(task, [0.0, 1.5, 1.5, 0.4, 1.5, 0.4, 0.4, 1.5], start=1001)
    outcomes = [(e.frame, e.data["outcome"]) for e in events(s, EventKind.TRIAL_END)]
    assert outcomes == [(1008, "hit")], outcomes


def test_vendrell_calibration_earns_the_target_hit_rate_on_the_baseline() -> None:
    proto = paradigm("vendrell2022", "baseline.frames=18000", "readout.smoothing.frames=1")
    rng = np.random.default_rng(1)
    baseline = np.convolve(rng.standard_normal(18000), np.ones(15) / 15, mode="same")
    task = Task(proto)
    run(task, baseline)
    cal = task.calibration
    assert cal is not None and cal.rule == "today"
    rules = HitRules.of(proto)
    above = baseline - cal.baseline_min
    minutes = 18000 / 30 / 60
    allowed = int(0.6 * minutes)  # 10 minutes: 6 hits
    assert baseline_hits(above, cal.threshold, rules) <= allowed
    assert baseline_hits(above, cal.threshold * 0.999, rules) > allowed  # the lowest such threshold


# ------------------------------------------------------------------------------------------- Daie 2021
def test_daie_lickport_moves_at_a_speed_proportional_to_the_readout_and_a_hit_is_the_port_arriving() -> None:
    proto = paradigm("daie2021_lickport", "baseline.frames=1000", "trials.count=2", "calibration.rule=\"fixed\"",
                     "calibration.fixed_threshold=1.0", "readout.smoothing.frames=1")
    proto = with_phase(with_phase(with_phase(proto, 1, frames=20), 4, frames=10), 5, frames=10)
    task = Task(proto)
    steps = run(task, np.linspace(0.0, 1.0, 1000))
    steps += run(task, [0.0] * 20, start=1000)  # photostimulation mapping, a marker epoch
    assert [e.data.get("name") for e in events(steps, EventKind.PHASE)] == [
        "spontaneous_before", "photostim_before", None, "bci"]
    # the trial: 10 grey frames, then the low-activity check (10 frames below 0.5), then active
    grey = run(task, [0.9] * 15 + [0.1] * 10, start=1020)
    assert {s.feedback.state for s in grey} == {TrialState.GREY}, "a high readout holds the trial back"
    active = run(task, [1.0] * 200, start=1045)
    speeds = [s.feedback.lickport_speed_mm_s for s in active if s.feedback.state is TrialState.ACTIVE]
    assert speeds and np.allclose(speeds, 1.4)  # at the threshold: the protocol's speed
    hit = next(i for i, s in enumerate(active) if s.feedback.state is TrialState.HIT_HOLD)
    # 7 mm at 1.4 mm/s at 20 frames/s: the port arrives on the 100th active frame
    assert hit == 99 and active[hit].feedback.lickport_mm == pytest.approx(7.0)
    assert [c.action for c in active[hit].commands] == [Action.REWARD]  # reward on hold frame 1
    positions = [s.feedback.lickport_mm for s in active[:hit + 1]]
    assert np.all(np.diff(positions) > 0)
    hold = [s.feedback.lickport_mm for s in active if s.feedback.state is TrialState.HIT_HOLD]
    assert len(hold) == 40 and np.allclose(hold, 7.0)  # held at the mouse while it drinks
    back = [s.feedback.lickport_mm for s in active if s.feedback.state is TrialState.ITI]
    assert back[0] < 7.0 and back[-1] == 0.0 and np.all(np.diff(back) <= 0)


def test_lickport_calibration_counts_a_window_when_its_summed_readout_would_bring_the_port_in() -> None:
    proto = paradigm("daie2021_lickport")
    rules = HitRules.of(proto)
    assert rules.travel_scale == pytest.approx(1.4 / (20.0 * 7.0))
    # a readout of exactly the threshold for 100 frames moves the port 7 mm: a hit at that threshold
    above = np.full(100, 0.5)
    assert baseline_hits(above, 0.5, rules) == 1 and baseline_hits(above, 0.51, rules) == 0


# ------------------------------------------------------------------------------------------- catch, opto
def test_catch_trials_show_no_feedback_and_earn_no_reward() -> None:
    text = protocol_text(trials="count = 40\nlength_frames = 40\ngrey_frames = 5\ncatch_fraction = 0.5")
    task = Task(parse_protocol(text))
    ramp_baseline(task, 100)
    t = threshold(task)
    steps: list[TaskStep] = []
    frame = 100
    while not task.done:
        steps.append(task.step(Readout(frame=frame, readout=float(t * 1.1 if task.trial_frame > 10 else 0.3))))
        frame += 1
    catch = [tr for tr in task.trials if tr.catch]
    assert 10 <= len(catch) <= 30  # 40 draws at 0.5
    assert all(tr.outcome is Outcome.HIT and tr.reward_frame == -1 for tr in catch)
    assert all(tr.reward_frame >= 0 for tr in task.trials if not tr.catch)
    in_catch = [s.feedback for s in steps if s.feedback.trial and task.trials[s.feedback.trial - 1].catch
                and s.feedback.state in (TrialState.ACTIVE, TrialState.HIT_HOLD)]
    assert in_catch and {f.screen for f in in_catch} == {Screen.GREY}
    assert task.summary()["catch"]["trials"] == len(catch)


@pytest.mark.parametrize("day,expect", [(1, Action.REWARD_OPTO), (2, Action.REWARD), (3, Action.REWARD_OPTO)])
def test_opto_on_alternate_days(day: int, expect: Action) -> None:
    text = protocol_text(reward='volume_ul = 4.0\nopto = "with_reward"\nopto_ms = 5.0',
                         opto='schedule = "alternate_days"\nodd_days = true')
    task = Task(parse_protocol(text), carried={"day": day})
    ramp_baseline(task, 100)
    t = threshold(task)
    steps = run(task, [0.3] * 6 + [t * 2] * 3, start=100)
    assert [c.action for s in steps for c in s.commands] == [expect]


def test_a_lickport_protocol_is_refused_on_a_rig_without_a_lickport() -> None:
    from bcirig.config import load_rig
    from bcirig.preflight import check_session

    proto = load_protocol(ROOT / "protocols" / "daie2021_lickport.toml")
    with pytest.raises(ConfigError, match="feedback.kind = 'lickport': expected a feedback this rig has: its "
                                          r"\[lickport\] kind is 'none'"):
        check_session(proto, load_rig(ROOT / "hardware" / "rigs" / "sim.toml"))
    check_session(proto, load_rig(ROOT / "hardware" / "rigs" / "sim-lickport.toml"))  # no error
