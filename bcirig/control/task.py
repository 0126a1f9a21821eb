"""The task: a protocol's phases in order, and in each trial phase a state machine of named states.

One call of :meth:`Task.step` per frame. The phases come from the protocol (``Protocol.phase_plan``; by
default Francioni 2026's baseline -> calibration -> closed-loop trials):

* open phases (``baseline``, ``spontaneous``, ``photostim_mapping``) run for their frames, the screen as
  the phase says (or open-loop stimuli); a baseline's readout is kept for the next calibration;
* marker phases (``alignment``, ``calibration``) take no frame: calibration computes the threshold from
  the last baseline with the protocol's rule (``bcirig.control.calibration.RULES``);
* trial phases (``closed_loop``, ``reinstatement``, and ``degradation``, whose hits go unrewarded while
  rewards come at random frames at the rate the preceding closed-loop phase earned) run their trials.

A phase's ``phase`` event is recorded on the frame that ended the phase before it (frame 0 for the first);
its own frames begin on the next. A phase with ``start = "operator"`` waits (state ``WAITING``, grey
screen) for the experimenter's command
(:meth:`Task.operate`, applied on the next frame and recorded as an ``operator`` event).

Each trial moves through the named states of :data:`TRANSITIONS`; each state has entry, per-frame and
exit handlers, and a transition the table does not allow raises :class:`TaskError`. ``GREY`` (no
evaluation; with a low-activity check it lasts until the readout has been low) -> ``ACTIVE`` (feedback
follows the readout; the outcomes of ``[outcomes]`` are checked in order: hit, abort, timeout) -> the
outcome's hold (``HIT_HOLD``, ``ABORT_HOLD``, ``TIMEOUT_HOLD``) -> ``ITI`` -> next trial. Every outcome's
actions are data (``OutcomeSpec``): hold frames and view, cue sound, reward on a hold frame, ITI frames,
screen and white-noise frame. ``PAUSED`` stops every clock until resumed. Frame semantics:

* the outcome frame is hold frame 1 (a hit's shows the target); the reward command is issued on hold frame
  ``reward_on_hold_frame`` (3 by default), the trial's ``reward_frame``, which ``trial_end`` already names;
* an outcome with ``hold_frames = 0`` (the timeout, by default) shows the frame as it was; its ITI starts
  on the next frame;
* ``Feedback.sound`` is a cue: the frame on which a sound starts (``TONE`` while tone feedback plays).

Refractory rule: after a hit, the next hit counts only once the readout has stayed below
``refractory_fraction`` of the threshold for ``refractory_frames`` frames. Catch trials show no feedback.
Opto goes with the rewards that ``[opto]`` schedules. Random choices (catch, opto per trial, stimuli,
uncoupled rewards) draw from their own generator seeded by the protocol, apart from calibration's.

The task is a stage: no clock, no sockets; the node that runs it calls :meth:`safe` when frames stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bcirig.config import (
    OPEN_PHASES,
    TRIAL_PHASES,
    FeedbackKind,
    HoldView,
    Opto,
    OptoSchedule,
    OutcomeSpec,
    OutcomeWhen,
    PhaseSpec,
    PhaseStart,
    Protocol,
)
from bcirig.control.calibration import CalibrationResult, HitRules, calibrate_day, carry_state
from bcirig.control.mapping import grating_angle, tone_frequency
from bcirig.interfaces import TaskStep
from bcirig.messages import (
    Action,
    Command,
    Event,
    EventKind,
    Feedback,
    OperatorCommand,
    Outcome,
    OutcomeCounts,
    Phase,
    Readout,
    Screen,
    Sound,
    TrialEnd,
    TrialState,
)


class TaskError(RuntimeError):
    """The task was asked for a transition its table does not allow (a bug, never a user error)."""


S = TrialState
HOLDS = {Outcome.HIT: S.HIT_HOLD, Outcome.ABORT: S.ABORT_HOLD, Outcome.TIMEOUT: S.TIMEOUT_HOLD}
_ANY_HOLD = frozenset(HOLDS.values())
# Every transition the task may make. PAUSED returns only to the state it paused (checked separately);
# any state may go to NONE when the session ends or goes safe.
TRANSITIONS: dict[TrialState, frozenset[TrialState]] = {
    S.NONE: frozenset({S.NONE, S.WAITING, S.ITI, S.PAUSED}),
    S.WAITING: frozenset({S.NONE, S.ITI}),
    S.ITI: frozenset({S.GREY, S.ACTIVE, S.NONE, S.WAITING, S.ITI, S.PAUSED}),
    S.GREY: frozenset({S.ACTIVE, S.PAUSED}),
    S.ACTIVE: frozenset({*_ANY_HOLD, S.ITI, S.PAUSED}),
    S.HIT_HOLD: frozenset({S.ITI, S.PAUSED}),
    S.ABORT_HOLD: frozenset({S.ITI, S.PAUSED}),
    S.TIMEOUT_HOLD: frozenset({S.ITI, S.PAUSED}),
    S.PAUSED: frozenset(),
}


@dataclass
class TrialRecord:
    """One row of the trial table."""

    trial: int
    start_frame: int
    phase: Phase = Phase.CLOSED_LOOP
    phase_index: int = -1  # its phase's place in the protocol's plan
    catch: bool = False
    opto: bool = False  # this trial's hit carries opto
    outcome: Outcome | None = None
    outcome_frame: int = -1
    reward_frame: int = -1  # a hit's reward command (scheduled at the outcome, sent then unless the task goes safe)

    @property
    def frames_to_outcome(self) -> int:
        """Frames from trial start to the outcome (inclusive of the grey start)."""
        return self.outcome_frame - self.start_frame + 1 if self.outcome_frame >= 0 else -1


@dataclass
class _Frame:
    """What one step accumulates."""

    frame: int
    value: float
    norm: float
    events: list[Event] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    reward: bool = False  # a reward command went out on this frame
    opto: bool = False


@dataclass(frozen=True)
class StateHandlers:
    """What a state does on entry, on each of its frames (returns the frame's feedback), and on exit."""

    frame: Callable[[_Frame], Feedback]
    entry: Callable[[_Frame], None] = lambda f: None
    exit: Callable[[_Frame], None] = lambda f: None


@dataclass
class _PhaseStats:
    index: int
    spec: PhaseSpec
    start_frame: int
    frames: int = 0
    rewards: int = 0


class Task:
    """Closed-loop BCI task driven by a protocol; deterministic given the protocol (seeded) and readouts."""

    def __init__(self, protocol: Protocol, *, carried: dict[str, Any] | None = None) -> None:
        self.p = protocol
        self.carried = dict(carried or {})
        self.day = int(self.carried.get("day", 1))
        self.rng = np.random.default_rng(protocol.protocol.seed)  # calibration's resampling
        self.draws = np.random.default_rng([protocol.protocol.seed, 7])  # catch, opto, stimuli, uncoupled rewards
        self.plan = protocol.phase_plan(self.day)
        self.hit_rules = HitRules.of(protocol)
        # the enabled outcomes in the order they are checked: on the frame's readout, then at the trial's length
        enabled = [(name, o) for name, o in protocol.outcomes.by_name().items() if o.enabled]
        self.instant_outcomes = [(n, o) for n, o in enabled if o.when is not OutcomeWhen.LENGTH]
        self.length_outcomes = [(n, o) for n, o in enabled if o.when is OutcomeWhen.LENGTH]
        self.phase = Phase.WAITING
        self.phase_index = -1
        self.phase_frames = 0  # frames run in the current phase
        self.state = S.NONE
        self.state_frame = 0  # frames spent in the current state (1 on its first frame)
        self.baseline: list[float] = []
        self.calibration: CalibrationResult | None = None
        self.trials: list[TrialRecord] = []
        self.phase_trials = 0
        self.trial_frame = 0
        self.iti_length = 0
        self.iti_screen = Screen.GREY
        self.iti_noise_frame = -1
        self.outcome_spec: OutcomeSpec | None = None
        self.angle = float("nan")
        self.stimulus = float("nan")  # open-loop stimuli: the feedback position in [0, 1]
        self.lickport_mm = 0.0 if protocol.feedback.kind is FeedbackKind.LICKPORT else float("nan")
        self.armed = True  # refractory rule: may the next crossing count as a hit
        self.below = 0  # consecutive frames below the refractory level
        self.below_start = 0  # ... below the low-activity level before a trial becomes active
        self.paused_from: TrialState | None = None
        self.pending: list[tuple[OperatorCommand, int, float]] = []
        self.coupled_rate = 0.0  # rewards per frame of the last closed-loop phase (degradation gives it)
        self.stats: list[_PhaseStats] = []
        self.uncoupled_rewards = 0
        self.next_command_id = 1
        self.invalid_readouts = 0
        self.safe_reason = ""
        self.handlers: dict[TrialState, StateHandlers] = {
            S.NONE: StateHandlers(frame=self._open_frame),
            S.WAITING: StateHandlers(frame=self._waiting_frame),
            S.GREY: StateHandlers(frame=self._grey_frame, entry=self._trial_entry),
            S.ACTIVE: StateHandlers(frame=self._active_frame),
            S.HIT_HOLD: StateHandlers(frame=self._hold_frame),
            S.ABORT_HOLD: StateHandlers(frame=self._hold_frame),
            S.TIMEOUT_HOLD: StateHandlers(frame=self._hold_frame),
            S.ITI: StateHandlers(frame=self._iti_frame, exit=self._iti_exit),
            S.PAUSED: StateHandlers(frame=self._paused_frame),
        }

    # ------------------------------------------------------------------------------------ public
    @property
    def done(self) -> bool:
        """True once the last phase has ended (or the task went safe)."""
        return self.phase in (Phase.DONE, Phase.SAFE)

    @property
    def spec(self) -> PhaseSpec | None:
        """The current phase's spec (None before the first and after the last)."""
        return self.plan[self.phase_index] if 0 <= self.phase_index < len(self.plan) else None

    def operate(self, command: OperatorCommand, command_id: int = 0, value: float = 0.0) -> None:
        """An experimenter's command, applied (or refused, with the reason) on the next frame."""
        self.pending.append((OperatorCommand(command), int(command_id), float(value)))

    def step(self, readout: Readout) -> TaskStep:
        """Advance one frame with this frame's readout."""
        value = readout.readout if readout.valid else float("nan")
        if not math.isfinite(value):
            self.invalid_readouts += 1
        base = self.calibration.baseline_min if self.calibration else float("nan")
        f = _Frame(frame=readout.frame, value=value, norm=value - base)
        if self.phase is Phase.WAITING:
            f.events.append(Event(frame=f.frame, name=EventKind.SESSION_START,
                                  data={"protocol": self.p.protocol.name}))
            self._next_phase(f)
        for cmd in self.pending:
            self._apply(f, *cmd)
        self.pending.clear()
        if self.done:
            fb = self._feedback(f, screen=Screen.GREY)
        else:
            if self.stats:
                self.stats[-1].frames += 1
            fb = self._frame(f)
        return TaskStep(feedback=fb, commands=f.commands, events=f.events)

    def safe(self, frame: int, reason: str) -> TaskStep:
        """Stop rewarding and grey the screen, for good: the session is over."""
        events = []
        f = _Frame(frame=frame, value=float("nan"), norm=float("nan"))
        if self.phase is not Phase.SAFE:
            data: dict[str, Any] = {"reason": reason}
            spec = self.outcome_spec
            holding = S.HIT_HOLD in (self.state, self.paused_from)
            if holding and spec is not None and self.trials and self.trials[-1].reward_frame >= 0 \
                    and self.state_frame < spec.reward_on_hold_frame:
                # The trial table names this hit's reward frame; say that the command was never sent.
                data["reward_withheld"] = {"trial": self.trial_number, "reward_frame": self.trials[-1].reward_frame}
            self.safe_reason = reason
            self.phase = Phase.SAFE
            self.state = S.NONE
            self.paused_from = None
            events.append(Event(frame=frame, name=EventKind.SAFE_STATE, data=data))
        return TaskStep(feedback=self._feedback(f, screen=Screen.GREY), events=events)

    def carry_forward(self) -> dict[str, Any]:
        """State for tomorrow's task: the threshold in noise units, so difficulty never drops."""
        return carry_state(self.calibration, self.carried, self.p.calibration.pool_days)

    # ------------------------------------------------------------------------------------ the machine
    def _go(self, f: _Frame, new: TrialState, *, state_frame: int = 1) -> None:
        """Leave the current state for ``new`` (exit, then entry handlers), if the table allows it."""
        old = self.state
        if new not in TRANSITIONS[old]:
            raise TaskError(f"frame {f.frame}: no transition {old.value} -> {new.value} in phase {self.phase.value}")
        self.handlers[old].exit(f)
        self.state = new
        self.state_frame = state_frame
        self.handlers[new].entry(f)

    def _frame(self, f: _Frame) -> Feedback:
        return self.handlers[self.state].frame(f)

    def _apply(self, f: _Frame, command: OperatorCommand, command_id: int, value: float) -> None:
        """Apply an operator command now, or refuse it with the reason; either way an event records it."""
        reason = ""
        spec = self.spec
        if self.done:
            reason = f"the session is {self.phase.value}"
        elif command in (OperatorCommand.START_BASELINE, OperatorCommand.START_TRIALS):
            wants_baseline = command is OperatorCommand.START_BASELINE
            if self.state is not S.WAITING or spec is None:
                reason = "no phase is waiting for the experimenter"
            elif (spec.kind is Phase.BASELINE) != wants_baseline:
                reason = f"the waiting phase is {spec.name}: use " + (
                    "start_baseline" if spec.kind is Phase.BASELINE else "start_trials")
            else:
                self._begin(f)
        elif command is OperatorCommand.PAUSE:
            if self.state in (S.PAUSED, S.WAITING):
                reason = f"the task is {self.state.value}"
            else:  # no exit or entry handler runs: the state resumes where it stopped
                if S.PAUSED not in TRANSITIONS[self.state]:
                    raise TaskError(f"frame {f.frame}: no transition {self.state.value} -> paused")
                self.paused_from, self.state = self.state, S.PAUSED
        elif command is OperatorCommand.RESUME:
            if self.state is not S.PAUSED or self.paused_from is None:
                reason = "the task is not paused"
            else:
                self.state, self.paused_from = self.paused_from, None
        elif command is OperatorCommand.REWARD:
            if not value >= 0:
                reason = f"a reward of {value} ul"
            else:
                f.commands.append(self._command(f.frame, Action.REWARD, reward_ul=value or self.p.reward.volume_ul))
                f.reward = True
        elif command is OperatorCommand.FLUSH:
            if not value > 0:
                reason = f"a flush of {value} ms: give the valve's open time in ms (> 0)"
            else:
                f.commands.append(self._command(f.frame, Action.FLUSH, open_ms=value))
        else:
            reason = f"unknown command {command.value!r}"
        f.events.append(Event(frame=f.frame, name=EventKind.OPERATOR, trial=self.trial_number,
                              data={"command": command.value, "command_id": command_id, "value": value,
                                    "applied": not reason, "reason": reason}))

    # ------------------------------------------------------------------------------------ phases
    def _next_phase(self, f: _Frame) -> None:
        """End the current phase and begin the next (marker phases run at once); DONE after the last."""
        if self.stats and self.stats[-1].spec.kind in (Phase.CLOSED_LOOP, Phase.REINSTATEMENT):
            last = self.stats[-1]
            self.coupled_rate = last.rewards / last.frames if last.frames else 0.0
        while True:
            self.phase_index += 1
            spec = self.spec
            if spec is None:
                self.phase = Phase.DONE
                if self.state is not S.NONE:
                    self.handlers[self.state].exit(f)
                self.state = S.NONE
                f.events.append(Event(frame=f.frame, name=EventKind.PHASE, data={"phase": Phase.DONE.value}))
                f.events.append(Event(frame=f.frame, name=EventKind.SESSION_END,
                                      data={**self.summary(), "carry_forward": self.carry_forward()}))
                return
            self.phase = spec.kind
            f.events.append(self._phase_event(f.frame, spec))
            if spec.kind is Phase.CALIBRATION:
                self._calibrate(f)
                continue
            if spec.kind is Phase.ALIGNMENT:
                continue
            if spec.start is PhaseStart.OPERATOR:
                self._go(f, S.WAITING)
            else:
                self._begin(f)
            return

    def _begin(self, f: _Frame) -> None:
        """The current phase's first frame is the next one (open phases) or starts a trial (trial phases)."""
        spec = self.spec
        assert spec is not None
        self.phase_frames = 0
        self.stats.append(_PhaseStats(index=self.phase_index, spec=spec, start_frame=f.frame + 1))
        if spec.kind is Phase.BASELINE:
            self.baseline = []
        if spec.kind in TRIAL_PHASES:
            self.phase_trials = 0
            self.iti_length = 0  # a zero-length ITI: the first trial starts on the next frame
            self._go(f, S.ITI, state_frame=0)
        else:
            self._go(f, S.NONE)

    def _phase_event(self, frame: int, spec: PhaseSpec) -> Event:
        data: dict[str, Any] = {"phase": spec.kind.value}
        if spec.name != spec.kind.value:
            data["name"] = spec.name
        return Event(frame=frame, name=EventKind.PHASE, data=data)

    def _calibrate(self, f: _Frame) -> None:
        self.calibration = calibrate_day(
            np.asarray(self.baseline), self.p.calibration,
            window_frames=self.p.trials.length_frames - self.p.trials.grey_frames,
            rng=self.rng, carried=self.carried, hit_rules=self.hit_rules,
        )
        data: dict[str, Any] = dict(self.calibration.summary())
        data["window_starts"] = self.calibration.window_starts.tolist()
        data["window_maxima"] = self.calibration.window_maxima.tolist()
        f.events.append(Event(frame=f.frame, name=EventKind.CALIBRATION, data=data))

    # ------------------------------------------------------------------------------------ open phases
    def _open_frame(self, f: _Frame) -> Feedback:
        spec = self.spec
        assert spec is not None and spec.kind in OPEN_PHASES
        if spec.kind is Phase.BASELINE:
            self.baseline.append(f.value)
        screen = spec.screen or Screen.GREY
        if spec.stimuli and self.phase_frames % spec.stimulus_frames == 0:
            self.stimulus = float(self.draws.integers(0, self.p.feedback.steps)) / max(1, self.p.feedback.steps - 1)
        self.phase_frames += 1
        fb = self._render(f, position=self.stimulus) if spec.stimuli else self._feedback(f, screen=screen)
        if self.phase_frames >= spec.frames:
            self._next_phase(f)
        return fb

    def _waiting_frame(self, f: _Frame) -> Feedback:
        return self._feedback(f, screen=Screen.GREY)

    def _paused_frame(self, f: _Frame) -> Feedback:
        return self._feedback(f, screen=Screen.GREY, lickport_speed=0.0)

    # ------------------------------------------------------------------------------------ trial phases
    @property
    def trial(self) -> TrialRecord:
        return self.trials[-1]

    def _refractory(self, f: _Frame) -> None:
        """Track the refractory rule on every trial-phase frame."""
        t = self.p.trials
        if t.refractory_fraction <= 0 or self.armed or self.calibration is None:
            return
        low = t.refractory_fraction * self.calibration.threshold
        self.below = self.below + 1 if math.isfinite(f.norm) and f.norm < low else 0
        self.armed = self.below >= t.refractory_frames

    def _iti_frame(self, f: _Frame) -> Feedback:
        spec = self.spec
        assert spec is not None
        if self.state_frame >= self.iti_length:  # the ITI is over: the next trial, or the next phase
            if self.phase_trials >= spec.trials:
                self._next_phase(f)
                if self.done:
                    return self._feedback(f, screen=Screen.GREY, norm=f.norm)
                return self._frame(f)  # this frame belongs to the next phase
            self._go(f, S.GREY if self.p.trials.grey_frames > 0 else S.ACTIVE)
            if self.state is S.ACTIVE:
                self._trial_entry(f)
            return self._frame(f)
        self.state_frame += 1
        self._refractory(f)
        self._uncoupled(f)
        sound = Sound.WHITE_NOISE if self.state_frame == self.iti_noise_frame else Sound.NONE
        return self._feedback(f, screen=self.iti_screen, norm=f.norm, sound=sound, lickport_speed=self._retract())

    def _iti_exit(self, f: _Frame) -> None:
        self.outcome_spec = None

    def _trial_entry(self, f: _Frame) -> None:
        """A new trial starts on this frame (entry of GREY, or of ACTIVE when there are no grey frames)."""
        spec = self.spec
        assert spec is not None
        t = self.p.trials
        catch = t.catch_fraction > 0 and float(self.draws.random()) < t.catch_fraction
        self.trials.append(TrialRecord(trial=len(self.trials) + 1, start_frame=f.frame, phase=spec.kind,
                                       phase_index=self.phase_index, catch=catch, opto=self._opto_on()))
        self.phase_trials += 1
        self.trial_frame = 0
        self.below_start = 0
        f.events.append(Event(frame=f.frame, name=EventKind.TRIAL_START, trial=self.trial_number,
                              data={"catch": True} if catch else {}))

    def _opto_on(self) -> bool:
        r, o = self.p.reward, self.p.opto
        if r.opto is Opto.NONE:
            return False
        if o.schedule is OptoSchedule.PER_TRIAL:
            return float(self.draws.random()) < o.fraction
        if o.schedule is OptoSchedule.ALTERNATE_DAYS:
            return (self.day % 2 == 1) == o.odd_days
        return True

    def _grey_frame(self, f: _Frame) -> Feedback:
        t = self.p.trials
        if self.trial_frame < t.grey_frames:
            self.trial_frame += 1
        self._refractory(f)
        self._uncoupled(f)
        fb = self._feedback(f, screen=Screen.GREY, norm=f.norm, lickport_speed=self._retract())
        self.state_frame += 1
        if self.trial_frame >= t.grey_frames and self._low_enough(f):
            self._go(f, S.ACTIVE)  # from the next frame on
        return fb

    def _low_enough(self, f: _Frame) -> bool:
        """The low-activity check before a trial becomes active (Daie): passes at once when off."""
        t = self.p.trials
        if t.start_below_fraction <= 0 or self.calibration is None:
            return True
        low = t.start_below_fraction * self.calibration.threshold
        self.below_start = self.below_start + 1 if math.isfinite(f.norm) and f.norm < low else 0
        return self.below_start >= t.start_below_frames

    def _condition(self, when: OutcomeWhen, f: _Frame) -> bool:
        assert self.calibration is not None
        if when is OutcomeWhen.LENGTH:
            return self.trial_frame >= self.p.trials.length_frames
        if not math.isfinite(f.norm):
            return False
        if when is OutcomeWhen.THRESHOLD:
            return f.norm >= self.calibration.threshold and self.armed
        if when is OutcomeWhen.BELOW_MIN:
            return f.norm < 0
        if when is OutcomeWhen.REACHED:
            return self.lickport_mm >= self.p.feedback.lickport_travel_mm and self.armed
        raise TaskError(f"no rule for the outcome condition {when.value!r}")

    def _active_frame(self, f: _Frame) -> Feedback:
        assert self.calibration is not None
        self.trial_frame += 1
        self._refractory(f)
        self._uncoupled(f)
        threshold = self.calibration.threshold
        speed = 0.0
        if self.p.feedback.kind is FeedbackKind.LICKPORT and not self.trial.catch:
            speed = self._advance_lickport(f.norm, threshold)
        if math.isfinite(f.norm):
            self.angle = grating_angle(f.norm, threshold, self.p.feedback)
        for name, o in self.instant_outcomes:
            if self._condition(o.when, f):
                return self._outcome(f, name, o, speed)
        fb = self._render(f, speed=speed)
        for name, o in self.length_outcomes:
            if self._condition(o.when, f):
                self._end_trial(f, name, o)
                if o.hold_frames > 0:
                    self._go(f, HOLDS[name], state_frame=0)  # hold frame 1 is the next frame
                else:
                    self._start_iti(f, o)
                break
        return fb

    def _outcome(self, f: _Frame, name: Outcome, o: OutcomeSpec, speed: float) -> Feedback:
        """An outcome on this frame: it is hold frame 1 (or, with no hold, the ITI starts next frame)."""
        self._end_trial(f, name, o)
        if o.hold_frames == 0:
            fb = self._render(f, speed=speed, sound=o.sound)
            self._start_iti(f, o)
            return fb
        self._go(f, HOLDS[name], state_frame=0)
        return self._hold_frame(f, cue=o.sound, outcome_frame=True)

    def _hold_frame(self, f: _Frame, cue: Sound = Sound.NONE, outcome_frame: bool = False) -> Feedback:
        o = self.outcome_spec
        assert o is not None
        self.state_frame += 1
        if not outcome_frame:  # the outcome frame was tracked as an active frame
            self._refractory(f)
            self._uncoupled(f)
        rec = self.trial
        if rec.reward_frame >= 0 and self.state_frame == o.reward_on_hold_frame:
            # f.frame == the trial's reward_frame unless a readout was lost during the hold (a counted bus gap)
            self._reward(f, opto=rec.opto)
        view = o.hold_view
        position = {HoldView.TARGET: 1.0, HoldView.ANGLE: float("nan")}.get(view, float("nan"))
        if view in (HoldView.GREY, HoldView.BLACK):
            fb = self._feedback(f, screen=Screen.GREY if view is HoldView.GREY else Screen.BLACK, norm=f.norm,
                                sound=cue, lickport_speed=0.0)
        else:
            fb = self._render(f, position=position, angle=o.angle_deg if view is HoldView.ANGLE else None,
                              sound=cue, speed=0.0)
        if self.state_frame >= o.hold_frames:
            self._start_iti(f, o)
        return fb

    def _start_iti(self, f: _Frame, o: OutcomeSpec) -> None:
        # The ITI begins on the next frame; state_frame counts ITI frames from 1 there.
        self._go(f, S.ITI, state_frame=0)
        self.iti_length = o.iti_frames
        self.iti_screen = o.iti_screen
        self.iti_noise_frame = o.noise_at_iti_frame
        self.outcome_spec = o

    def _end_trial(self, f: _Frame, name: Outcome, o: OutcomeSpec) -> None:
        rec = self.trial
        rec.outcome = name
        rec.outcome_frame = f.frame
        self.outcome_spec = o
        rewarded = o.reward and self.phase is not Phase.DEGRADATION and (not rec.catch or self.p.trials.catch_reward)
        if rewarded:  # hold frame 1 is this frame; the reward command goes out on its k-th
            rec.reward_frame = f.frame + o.reward_on_hold_frame - 1
        if name is Outcome.HIT:
            self.armed = not (self.p.trials.refractory_fraction > 0)
            self.below = 0
        end = TrialEnd(outcome=name, start_frame=rec.start_frame, frames=rec.frames_to_outcome,
                       reward_frame=rec.reward_frame, phase=rec.phase, catch=rec.catch)
        f.events.append(Event(frame=f.frame, name=EventKind.TRIAL_END, trial=rec.trial, data=end.to_data()))

    def _uncoupled(self, f: _Frame) -> None:
        """Degradation: a reward on random frames at the rate the preceding closed-loop phase earned."""
        if self.phase is not Phase.DEGRADATION or self.coupled_rate <= 0:
            return
        if float(self.draws.random()) < self.coupled_rate:
            self._reward(f, opto=False)
            self.uncoupled_rewards += 1
            f.events.append(Event(frame=f.frame, name=EventKind.UNCOUPLED_REWARD, trial=self.trial_number,
                                  data={"rate_per_frame": self.coupled_rate}))

    def _reward(self, f: _Frame, *, opto: bool) -> None:
        r = self.p.reward
        instead = opto and r.opto is Opto.INSTEAD_OF_REWARD
        action = Action.OPTO if instead else Action.REWARD_OPTO if opto else Action.REWARD
        f.commands.append(self._command(f.frame, action, reward_ul=0.0 if instead else r.volume_ul,
                                        opto_ms=r.opto_ms))
        f.reward = f.reward or not instead
        f.opto = f.opto or opto
        if self.stats:
            self.stats[-1].rewards += 1

    def _command(self, frame: int, action: Action, *, reward_ul: float = 0.0, opto_ms: float = 0.0,
                 open_ms: float = 0.0) -> Command:
        cmd = Command(frame=frame, command_id=self.next_command_id, action=action, reward_ul=reward_ul,
                      opto_ms=opto_ms, open_ms=open_ms)
        self.next_command_id += 1
        return cmd

    # ------------------------------------------------------------------------------------ lickport
    def _advance_lickport(self, norm: float, threshold: float) -> float:
        """Move the port toward the mouse at a speed proportional to the readout; returns the speed."""
        fb = self.p.feedback
        speed = fb.lickport_speed_mm_s * max(norm, 0.0) / threshold if math.isfinite(norm) and threshold > 0 else 0.0
        speed = min(speed, fb.lickport_max_speed_mm_s)
        self.lickport_mm = min(fb.lickport_travel_mm, self.lickport_mm + speed / self.p.imaging.frame_rate_hz)
        return speed

    def _retract(self) -> float:
        """Outside the active state the port goes back to its start; returns the (negative) speed."""
        if self.p.feedback.kind is not FeedbackKind.LICKPORT or self.lickport_mm <= 0:
            return 0.0
        back = self.p.feedback.lickport_retract_mm_s
        self.lickport_mm = max(0.0, self.lickport_mm - back / self.p.imaging.frame_rate_hz)
        return -back

    # ------------------------------------------------------------------------------------ feedback
    @property
    def trial_number(self) -> int:
        """1-based number of the current (or last) trial; 0 before the first."""
        return len(self.trials)

    def _render(self, f: _Frame, *, position: float | None = None, angle: float | None = None,
                sound: Sound = Sound.NONE, speed: float = 0.0) -> Feedback:
        """Feedback that shows a value: the readout (``position`` None), a position in [0, 1], or an angle.

        Catch trials show nothing (grey, no tone, the lickport still).
        """
        assert self.calibration is not None or position is not None
        threshold = self.calibration.threshold if self.calibration else 1.0
        kind = self.p.feedback.kind
        if self.state in (S.GREY, S.ACTIVE, *_ANY_HOLD) and self.trials and self.trial.catch \
                and self.phase in TRIAL_PHASES:
            return self._feedback(f, screen=Screen.GREY, norm=f.norm, sound=sound, lickport_speed=0.0)
        if kind is FeedbackKind.LICKPORT:
            return self._feedback(f, screen=Screen.GREY, norm=f.norm, sound=sound, lickport_speed=speed)
        if kind is FeedbackKind.TONE:
            if angle is not None:
                frac = 0.0
            elif position is not None:
                frac = position if math.isfinite(position) else 0.0
            else:
                frac = None
            hz = tone_frequency(f.norm if frac is None else frac * threshold, threshold, self.p.feedback)
            return self._feedback(f, screen=Screen.GREY, norm=f.norm,
                                  sound=sound if sound is not Sound.NONE else Sound.TONE, tone_hz=hz)
        if angle is not None:
            self.angle = angle
        elif position is not None and math.isfinite(position):
            cfg = self.p.feedback
            self.angle = cfg.target_deg - (cfg.steps - 1) * cfg.step_deg * (1.0 - position)
        return self._feedback(f, screen=Screen.GRATING, norm=f.norm, sound=sound, angle=self.angle)

    def _feedback(self, f: _Frame, *, screen: Screen, norm: float = float("nan"), sound: Sound = Sound.NONE,
                  angle: float = float("nan"), tone_hz: float = float("nan"),
                  lickport_speed: float | None = None) -> Feedback:
        threshold = self.calibration.threshold if self.calibration else float("nan")
        in_trials = self.phase in TRIAL_PHASES
        lick = self.p.feedback.kind is FeedbackKind.LICKPORT
        if lick and lickport_speed is None:
            lickport_speed = self._retract()
        return Feedback(
            frame=f.frame,
            phase=self.phase,
            state=self.state,
            trial=self.trial_number if in_trials else 0,
            trial_frame=self.trial_frame if self.state in (S.GREY, S.ACTIVE) else 0,
            screen=screen,
            angle_deg=angle if screen is Screen.GRATING else float("nan"),
            sound=sound,
            tone_hz=tone_hz,
            reward=f.reward,
            opto=f.opto,
            readout_norm=norm,
            threshold=threshold,
            lickport_mm=self.lickport_mm if lick else float("nan"),
            lickport_speed_mm_s=float(lickport_speed or 0.0) if lick else float("nan"),
        )

    # ------------------------------------------------------------------------------------ results
    def summary(self) -> dict[str, Any]:
        """Counts a scientist reads first: trials, hits, hit rate, median frames to hit; and per phase."""
        done = [t for t in self.trials if t.outcome is not None]
        counts = OutcomeCounts.of(t.outcome for t in done)
        hits = [t for t in done if t.outcome is Outcome.HIT]
        phases = []
        for st in self.stats:
            if st.spec.kind not in TRIAL_PHASES:
                continue
            mine = [t for t in done if t.phase_index == st.index]
            c = OutcomeCounts.of(t.outcome for t in mine)
            phases.append({"phase": st.spec.kind.value, "name": st.spec.name, **c.as_dict(),
                           "rewards": st.rewards, "frames": st.frames})
        out: dict[str, Any] = {
            **counts.as_dict(),
            "median_frames_to_hit": float(np.median([t.frames_to_outcome for t in hits])) if hits else float("nan"),
            "invalid_readouts": self.invalid_readouts,
        }
        if len(phases) > 1 or any(p["phase"] != Phase.CLOSED_LOOP.value for p in phases):
            out["phases"] = phases
        if self.uncoupled_rewards:
            out["uncoupled_rewards"] = self.uncoupled_rewards
        catch = [t for t in done if t.catch]
        if catch:
            out["catch"] = OutcomeCounts.of(t.outcome for t in catch).as_dict()
        return out

