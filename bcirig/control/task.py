"""The trial state machine (Francioni et al. 2026 two-population BCI; other paradigms by parameters).

One call of :meth:`Task.step` per frame: baseline -> calibration -> closed-loop trials. Each trial:
``GREY`` (no evaluation) -> ``ACTIVE`` (grating follows the readout; hit / abort / timeout evaluated)
-> ``HIT_HOLD`` or ``ABORT_HOLD`` -> ``ITI`` -> next trial. Frame semantics:

* the frame on which the readout crosses the threshold is hold frame 1 and shows the target; the reward
  command is issued on hold frame ``reward_on_hold_frame`` (3 by default), the trial's ``reward_frame``
  (outcome frame + reward_on_hold_frame - 1), which the ``trial_end`` event already names;
* the abort frame is abort-hold frame 1 (grating at ``abort.angle_deg``, white-noise cue);
* a trial whose ``length_frames``-th frame passes without an outcome times out; its ITI starts next frame;
* ``Feedback.sound`` is a cue: the frame on which a sound starts.

The task is a stage: no clock, no sockets; the node that runs it calls :meth:`safe` when frames stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bcirig.config import Protocol
from bcirig.control.calibration import CalibrationResult, calibrate_day, carry_state
from bcirig.control.mapping import grating_angle, tone_frequency
from bcirig.interfaces import TaskStep
from bcirig.messages import (
    Action,
    Command,
    Event,
    EventKind,
    Feedback,
    Outcome,
    Phase,
    Readout,
    Screen,
    Sound,
    TrialState,
)


@dataclass
class TrialRecord:
    """One row of the trial table."""

    trial: int
    start_frame: int
    outcome: Outcome | None = None
    outcome_frame: int = -1
    reward_frame: int = -1  # a hit's reward command (scheduled at the outcome, sent then unless the task goes safe)

    @property
    def frames_to_outcome(self) -> int:
        """Frames from trial start to the outcome (inclusive of the grey start)."""
        return self.outcome_frame - self.start_frame + 1 if self.outcome_frame >= 0 else -1


class Task:
    """Closed-loop BCI task driven by a protocol; deterministic given the protocol (seeded) and readouts."""

    def __init__(self, protocol: Protocol, *, carried: dict[str, Any] | None = None) -> None:
        self.p = protocol
        self.carried = dict(carried or {})
        self.rng = np.random.default_rng(protocol.protocol.seed)
        self.phase = Phase.WAITING
        self.state = TrialState.NONE
        self.baseline: list[float] = []
        self.calibration: CalibrationResult | None = None
        self.trials: list[TrialRecord] = []
        self.trial_frame = 0
        self.state_frame = 0  # frames spent in the current state (1 on its first frame)
        self.iti_length = 0
        self.iti_screen = Screen.GREY
        self.iti_noise_frame = -1
        self.angle = float("nan")
        self.next_command_id = 1
        self.invalid_readouts = 0
        self.safe_reason = ""

    # ------------------------------------------------------------------------------------ public
    @property
    def done(self) -> bool:
        """True once the last trial's ITI has ended (or the task went safe)."""
        return self.phase in (Phase.DONE, Phase.SAFE)

    def step(self, readout: Readout) -> TaskStep:
        """Advance one frame with this frame's readout."""
        frame = readout.frame
        value = readout.readout if readout.valid else float("nan")
        if not math.isfinite(value):
            self.invalid_readouts += 1
        events: list[Event] = []
        commands: list[Command] = []
        if self.phase is Phase.WAITING:
            self.phase = Phase.BASELINE
            events.append(Event(frame=frame, name=EventKind.SESSION_START, data={"protocol": self.p.protocol.name}))
            events.append(self._phase_event(frame))
        if self.phase is Phase.BASELINE:
            fb = self._baseline(frame, value, events)
        elif self.phase is Phase.CLOSED_LOOP:
            fb = self._closed_loop(frame, value, events, commands)
        else:
            fb = self._feedback(frame, screen=Screen.GREY)
        return TaskStep(feedback=fb, commands=commands, events=events)

    def safe(self, frame: int, reason: str) -> TaskStep:
        """Stop rewarding and grey the screen, for good: the session is over."""
        events = []
        if self.phase is not Phase.SAFE:
            data: dict[str, Any] = {"reason": reason}
            if self.state is TrialState.HIT_HOLD and self.state_frame < self.p.outcomes.hit.reward_on_hold_frame:
                # The trial table names this hit's reward frame; say that the command was never sent.
                data["reward_withheld"] = {"trial": self.trial_number, "reward_frame": self.trials[-1].reward_frame}
            self.safe_reason = reason
            self.phase = Phase.SAFE
            self.state = TrialState.NONE
            events.append(Event(frame=frame, name=EventKind.SAFE_STATE, data=data))
        return TaskStep(feedback=self._feedback(frame, screen=Screen.GREY), events=events)

    def carry_forward(self) -> dict[str, Any]:
        """State for tomorrow's task: the threshold in noise units, so difficulty never drops."""
        return carry_state(self.calibration, self.carried, self.p.calibration.pool_days)

    # ------------------------------------------------------------------------------------ phases
    def _phase_event(self, frame: int) -> Event:
        return Event(frame=frame, name=EventKind.PHASE, data={"phase": self.phase.value})

    def _baseline(self, frame: int, value: float, events: list[Event]) -> Feedback:
        self.baseline.append(value)
        fb = self._feedback(frame, screen=self.p.baseline.screen)
        if len(self.baseline) >= self.p.baseline.frames:
            self.calibration = calibrate_day(
                np.asarray(self.baseline), self.p.calibration,
                window_frames=self.p.trials.length_frames - self.p.trials.grey_frames,
                rng=self.rng, carried=self.carried,
            )
            data: dict[str, Any] = dict(self.calibration.summary())
            data["window_starts"] = self.calibration.window_starts.tolist()
            data["window_maxima"] = self.calibration.window_maxima.tolist()
            events.append(Event(frame=frame, name=EventKind.CALIBRATION, data=data))
            self.phase = Phase.CLOSED_LOOP
            events.append(self._phase_event(frame))
            self._enter(TrialState.ITI)  # zero-length ITI: the first trial starts on the next frame
            self.iti_length = 0
        return fb

    def _closed_loop(self, frame: int, value: float, events: list[Event], commands: list[Command]) -> Feedback:
        assert self.calibration is not None
        norm = value - self.calibration.baseline_min
        if self.state is TrialState.ITI and self.state_frame >= self.iti_length:
            if len(self.trials) >= self.p.trials.count:
                self.phase = Phase.DONE
                self.state = TrialState.NONE
                events.append(self._phase_event(frame))
                data = {**self.summary(), "carry_forward": self.carry_forward()}
                events.append(Event(frame=frame, name=EventKind.SESSION_END, data=data))
                return self._feedback(frame, screen=Screen.GREY, norm=norm)
            self.trials.append(TrialRecord(trial=len(self.trials) + 1, start_frame=frame))
            self.trial_frame = 0
            self._enter(TrialState.GREY if self.p.trials.grey_frames > 0 else TrialState.ACTIVE)
            events.append(Event(frame=frame, name=EventKind.TRIAL_START, trial=self.trial_number))
        else:
            self.state_frame += 1
        if self.state in (TrialState.GREY, TrialState.ACTIVE):
            self.trial_frame += 1
        handler = {
            TrialState.GREY: self._grey,
            TrialState.ACTIVE: self._active,
            TrialState.HIT_HOLD: self._hit_hold,
            TrialState.ABORT_HOLD: self._abort_hold,
            TrialState.ITI: self._iti,
        }[self.state]
        return handler(frame, norm, events, commands)

    # ------------------------------------------------------------------------------------ states
    def _grey(self, frame: int, norm: float, events: list[Event], commands: list[Command]) -> Feedback:
        fb = self._feedback(frame, screen=Screen.GREY, norm=norm)
        if self.trial_frame >= self.p.trials.grey_frames:
            self._enter(TrialState.ACTIVE)  # from the next frame on
        return fb

    def _active(self, frame: int, norm: float, events: list[Event], commands: list[Command]) -> Feedback:
        assert self.calibration is not None
        threshold = self.calibration.threshold
        if math.isfinite(norm):
            if norm >= threshold:
                self._end_trial(frame, Outcome.HIT, events)
                self._enter(TrialState.HIT_HOLD)
                self.angle = self.p.feedback.target_deg
                return self._hit_hold(frame, norm, events, commands)
            if norm < 0 and self.p.outcomes.abort.enabled:
                self._end_trial(frame, Outcome.ABORT, events)
                self._enter(TrialState.ABORT_HOLD)
                self.angle = self.p.outcomes.abort.angle_deg
                return self._feedback(
                    frame, screen=Screen.GRATING, norm=norm, sound=self.p.outcomes.abort.sound
                )
            self.angle = grating_angle(norm, threshold, self.p.feedback)
        fb = self._feedback(frame, screen=Screen.GRATING, norm=norm)
        if self.trial_frame >= self.p.trials.length_frames:
            self._end_trial(frame, Outcome.TIMEOUT, events)
            to = self.p.outcomes.timeout
            self._start_iti(to.iti_frames, to.iti_screen, to.noise_at_iti_frame)
        return fb

    def _hit_hold(self, frame: int, norm: float, events: list[Event], commands: list[Command]) -> Feedback:
        hit = self.p.outcomes.hit
        reward = self.state_frame == hit.reward_on_hold_frame
        if reward:
            # frame == the trial's reward_frame unless a readout was lost during the hold (a counted bus gap)
            commands.extend(self._reward_commands(frame))
        fb = self._feedback(
            frame, screen=Screen.GRATING, norm=norm, reward=reward and self.p.reward.opto != "instead_of_reward",
            opto=reward and self.p.reward.opto != "none",
        )
        if self.state_frame >= hit.hold_frames:
            self._start_iti(hit.iti_frames, hit.iti_screen, -1)
        return fb

    def _abort_hold(self, frame: int, norm: float, events: list[Event], commands: list[Command]) -> Feedback:
        ab = self.p.outcomes.abort
        fb = self._feedback(frame, screen=Screen.GRATING, norm=norm)
        if self.state_frame >= ab.hold_frames:
            self._start_iti(ab.iti_frames, ab.iti_screen, -1)
        return fb

    def _iti(self, frame: int, norm: float, events: list[Event], commands: list[Command]) -> Feedback:
        sound = Sound.WHITE_NOISE if self.state_frame == self.iti_noise_frame else Sound.NONE
        return self._feedback(frame, screen=self.iti_screen, norm=norm, sound=sound)

    # ------------------------------------------------------------------------------------ helpers
    @property
    def trial_number(self) -> int:
        """1-based number of the current (or last) trial; 0 before the first."""
        return len(self.trials)

    def _enter(self, state: TrialState) -> None:
        self.state = state
        self.state_frame = 1

    def _start_iti(self, frames: int, screen: Screen, noise_frame: int) -> None:
        # The ITI begins on the next frame; state_frame counts ITI frames from 1 there.
        self.state = TrialState.ITI
        self.state_frame = 0
        self.iti_length = frames
        self.iti_screen = screen
        self.iti_noise_frame = noise_frame

    def _end_trial(self, frame: int, outcome: Outcome, events: list[Event]) -> None:
        rec = self.trials[-1]
        rec.outcome = outcome
        rec.outcome_frame = frame
        if outcome is Outcome.HIT:  # hold frame 1 is this frame; the reward command goes out on its k-th
            rec.reward_frame = frame + self.p.outcomes.hit.reward_on_hold_frame - 1
        events.append(
            Event(
                frame=frame,
                name=EventKind.TRIAL_END,
                trial=rec.trial,
                data={"outcome": outcome.value, "start_frame": rec.start_frame, "frames": rec.frames_to_outcome,
                      "reward_frame": rec.reward_frame},
            )
        )

    def _reward_commands(self, frame: int) -> list[Command]:
        r = self.p.reward
        action = {"none": Action.REWARD, "with_reward": Action.REWARD_OPTO, "instead_of_reward": Action.OPTO}[r.opto]
        cmd = Command(frame=frame, command_id=self.next_command_id, action=action,
                      reward_ul=0.0 if action is Action.OPTO else r.volume_ul, opto_ms=r.opto_ms)
        self.next_command_id += 1
        return [cmd]

    def _feedback(
        self,
        frame: int,
        *,
        screen: Screen,
        norm: float = float("nan"),
        sound: Sound = Sound.NONE,
        reward: bool = False,
        opto: bool = False,
    ) -> Feedback:
        threshold = self.calibration.threshold if self.calibration else float("nan")
        grating = screen is Screen.GRATING
        tone = grating and self.p.feedback.kind == "tone"
        return Feedback(
            frame=frame,
            phase=self.phase,
            state=self.state,
            trial=self.trial_number if self.phase is Phase.CLOSED_LOOP else 0,
            trial_frame=self.trial_frame if self.state in (TrialState.GREY, TrialState.ACTIVE) else 0,
            screen=Screen.GREY if tone else screen,
            angle_deg=self.angle if grating and not tone else float("nan"),
            sound=Sound.TONE if tone and sound is Sound.NONE else sound,
            tone_hz=tone_frequency(norm, threshold, self.p.feedback) if tone else float("nan"),
            reward=reward,
            opto=opto,
            readout_norm=norm,
            threshold=threshold,
        )

    def summary(self) -> dict[str, Any]:
        """Counts a scientist reads first: trials, hits, hit rate, median frames to hit."""
        outcomes = [t.outcome for t in self.trials if t.outcome is not None]
        hits = [t for t in self.trials if t.outcome is Outcome.HIT]
        n = len(outcomes)
        return {
            "trials": n,
            "hits": len(hits),
            "aborts": sum(o is Outcome.ABORT for o in outcomes),
            "timeouts": sum(o is Outcome.TIMEOUT for o in outcomes),
            "hit_rate": len(hits) / n if n else float("nan"),
            "median_frames_to_hit": float(np.median([t.frames_to_outcome for t in hits])) if hits else float("nan"),
            "invalid_readouts": self.invalid_readouts,
        }
