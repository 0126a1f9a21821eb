"""Lickport node: the task's feedback moves the motorised lickport; the stage's position goes on the bus.

The task (``bcirig.control``) decides where the port is on every frame: ``Feedback.lickport_mm``, mm
travelled toward the mouse from the port's start (the rig's ``lickport.min_mm``), and the speed it moves
at. This node only drives the Zaber stage (``bcirig.devices.lickport``) and reports, once per frame, where
the stage says it is (a :class:`~bcirig.messages.LickportPosition`: the session file's ``lickport`` table).

**Absolute moves, not velocity moves.** On each frame whose position changed the node sends ``move abs``
to the task's position (start + lickport_mm, inside ``min_mm..max_mm``; the driver clamps too) at the
stage's top speed (the rig's ``max_speed_mm_s``, written into the stage). Because:

- the stage ends where the task's integrated position is, whatever the pacing: a lockstep session runs
  faster than real time, and velocity moves would integrate over the stage's wall clock and drift away
  from the position the task judged a hit on;
- a lost command, or this process killed, leaves the stage stopped at its last target (one frame's
  travel beyond the one before), while a velocity move would carry the port on toward the mouse until
  ``limit.max``;
- an absolute command re-sent after a lost reply never moves the stage twice as far.

Each frame's step (speed x frame period) is covered at the top speed well inside the frame, so the
measured position follows the commanded one within one frame's travel; the commanded speed is recorded.

**Never waits on the stage** while the session runs: commands and position requests are written without
waiting for replies (``ZaberLickport.request_*``) and the replies are read when the serial port's file
descriptor wakes the node's poller. At most ``MAX_STATUS_IN_FLIGHT`` position requests are outstanding;
a frame that finds them all outstanding (a stage slower than the frames) is counted, not measured.

**Safety: a safe port is away from the mouse.** On SAFE from the supervisor, a safe-phase feedback from
the task, or the supervisor lost, the node stops obeying feedback, stops the stage and retracts it to its
start (``min_mm``), reporting the retraction (``retracting`` rows) until it is there. At the session's
end it retracts too, and a failing node tries the same before it closes the port. Whatever this node
does, the stage's firmware holds ``limit.min``, ``limit.max`` and ``maxspeed`` from the rig file.

``kind = "simulated"`` serves the Zaber twin (``bcirig.devices.lickport_twin``) on a pseudo-terminal
from a thread of this process, and the driver opens it with pyserial exactly as it opens a real stage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bcirig.config import LickportConfig, LickportKind, load_rig
from bcirig.devices import LickportError, LickportStatus, ZaberLickport, ZaberStageModel, ZaberTwin, open_lickport
from bcirig.messages import Feedback, LickportPosition, LogLevel, Message, Phase
from bcirig.nodes.base import HEARTBEAT_S, Node, NodeSpec

MAX_STATUS_IN_FLIGHT = 4
RETRACT_REPORT_S = 1 / 30  # while retracting, a position report this often
TWIN_START_MM = 1.0  # where the simulated stage's carriage was left: homing is exercised on every run


@contextlib.contextmanager
def open_stage(cfg: LickportConfig) -> Iterator[ZaberLickport]:
    """The rig's stage, limits applied; ``simulated``: the twin on a pty in this process, opened as a serial port."""
    if cfg.kind != LickportKind.SIMULATED:
        with open_lickport(cfg) as stage:
            yield stage
        return
    travel = max(525_000, math.ceil(cfg.max_mm * 1000 / cfg.um_per_microstep) + 1)
    model = ZaberStageModel(device=cfg.device, travel_microsteps=travel,
                            start_microsteps=TWIN_START_MM * 1000 / cfg.um_per_microstep)
    with ZaberTwin(model) as twin:
        serial_cfg = dataclasses.replace(cfg, kind=LickportKind.SERIAL, port=twin.pty_path)
        with open_lickport(serial_cfg) as stage:
            yield stage


@dataclass
class _Asked:
    """A frame whose position request is in flight."""

    frame: int
    commanded_mm: float
    speed_mm_s: float
    t_ns: dict[str, int]
    retracting: bool = False


class LickportNode(Node):
    """Moves the lickport where each frame's feedback puts it; publishes the measured position per frame."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.cfg = load_rig(spec.rig_path).lickport
        self.start_mm = self.cfg.min_mm
        self.stack = contextlib.ExitStack()
        self.stage: ZaberLickport = self.stack.enter_context(open_stage(self.cfg))
        # Before READY, so the session starts with the port at its start (these calls wait; nothing runs yet).
        self.stage.home()
        self.target_mm = self.stage.move_to(self.start_mm, wait=True)
        self.retract_s = (self.cfg.max_mm - self.cfg.min_mm) / self.cfg.max_speed_mm_s + 2.0
        self.latest: Feedback | None = None
        self.asked: deque[_Asked] = deque()
        self.last_frame = -1
        self.safe_state = False
        self.retracted = False
        self.next_report = 0.0
        # Every feedback received is reported (positions, less the retraction's) or counted once here:
        # coalesced (a newer one came before it was handled), unmeasured (position requests all in flight),
        # abandoned (in flight at SAFE), after_safe (from the safe state on, the task's safe feedback included).
        self.counters.update(positions=0, moves=0, frames_unmeasured=0, frames_coalesced=0, frames_abandoned=0,
                             frames_after_safe=0, clamped_frames=0, max_lag_um=0)

    def extra_poll(self) -> list[Any]:
        fd = self.stage.fileno()
        return [] if fd is None else [fd]

    def next_wakeup(self, now: float) -> float:
        wake = now + HEARTBEAT_S
        deadline = self.stage.reply_deadline()
        if deadline is not None:
            wake = min(wake, deadline)
        if self.safe_state and not self.retracted:
            wake = min(wake, self.next_report)
        return wake

    # ------------------------------------------------------------------------------------ frames
    def on_message(self, msg: Message) -> None:
        if not isinstance(msg, Feedback):
            return
        if self.safe_state:
            self.counters["frames_after_safe"] += 1
            return
        msg.t_ns["device_in"] = time.monotonic_ns()
        self.last_frame = max(self.last_frame, msg.frame)
        if msg.phase is Phase.SAFE:  # the task went safe by itself (frames stopped)
            self._go_safe()
            self.counters["frames_after_safe"] += 1
            return
        if self.latest is not None:  # frames that arrive together: only the newest moves the stage
            self.counters["frames_coalesced"] += 1
        if self.latest is None or msg.frame >= self.latest.frame:
            self.latest = msg

    def on_tick(self, now: float) -> None:
        if self.latest is not None and not self.safe_state:
            self._drive(self.latest)
            self.latest = None
        elif self.safe_state and not self.retracted and now >= self.next_report and not self.stage.in_flight:
            self.asked.append(_Asked(self.last_frame, 0.0, -self.cfg.max_speed_mm_s, {"asked": time.monotonic_ns()},
                                     retracting=True))
            self.stage.request_status()
            self.next_report = now + RETRACT_REPORT_S
        for status in self.stage.poll_replies():
            self._report(self.asked.popleft(), status)

    def _drive(self, fb: Feedback) -> None:
        travelled = fb.lickport_mm if math.isfinite(fb.lickport_mm) else 0.0  # NaN: not driven, held at start
        target = self.start_mm + travelled
        if not self.cfg.min_mm <= target <= self.cfg.max_mm:
            if not self.counters["clamped_frames"]:
                self.log(LogLevel.WARNING, f"lickport_mm = {fb.lickport_mm:.3f} mm is beyond the rig's travel "
                                           f"({self.cfg.min_mm}..{self.cfg.max_mm} mm); the port stops at the limit",
                         frame=fb.frame)
            self.counters["clamped_frames"] += 1
            target = min(max(target, self.cfg.min_mm), self.cfg.max_mm)
        if target != self.target_mm:
            self.target_mm = target
            self.stage.request_move_to(target)
            self.counters["moves"] += 1
        if self.stage.statuses_in_flight >= MAX_STATUS_IN_FLIGHT:
            self.counters["frames_unmeasured"] += 1
            return
        stamps: dict[str, int] = {k: fb.t_ns[k] for k in ("task_out", "device_in") if k in fb.t_ns}
        # stamped before the request goes out: the stage's answer is certainly from after this time
        self.asked.append(_Asked(fb.frame, fb.lickport_mm, fb.lickport_speed_mm_s,
                                 {**stamps, "asked": time.monotonic_ns()}))
        self.stage.request_status()

    def _report(self, asked: _Asked, status: LickportStatus) -> None:
        measured = status.position_mm - self.start_mm
        if asked.retracting and not status.busy and abs(measured) < 1e-3:
            self.retracted = True
        if math.isfinite(asked.commanded_mm) and not asked.retracting:
            lag_um = round(abs(measured - asked.commanded_mm) * 1000)
            self.counters["max_lag_um"] = max(self.counters["max_lag_um"], lag_um)
        self.pub.publish(LickportPosition(
            frame=asked.frame, commanded_mm=asked.commanded_mm, speed_mm_s=asked.speed_mm_s, measured_mm=measured,
            moving=status.busy, retracting=asked.retracting, t_ns={**asked.t_ns, "device_ack": status.t_ns}))
        self.counters["positions"] += 1

    # ------------------------------------------------------------------------------------ safety
    def _go_safe(self) -> None:
        """Stop obeying feedback; stop the stage and send it back to its start (no waiting for the motion)."""
        if self.safe_state:
            return
        self.safe_state = True
        # the blocking commands below abandon the position requests in flight, and no frame moves it again
        self.counters["frames_abandoned"] += len(self.asked) + (self.latest is not None)
        self.latest = None
        self.asked.clear()
        self.stage.stop()
        self.target_mm = self.stage.move_to(self.start_mm)
        self.next_report = time.monotonic()

    def on_safe(self, reason: str) -> None:
        self._go_safe()

    def _retract_and_wait(self) -> LickportStatus:
        self.asked.clear()
        self.stage.move_to(self.start_mm)
        self.stage.wait_idle(timeout_s=self.retract_s)
        return self.stage.status()

    def _retract_and_report(self) -> None:
        """Back to the start, waiting for it; the last report (before the final heartbeat) says it got there."""
        asked = time.monotonic_ns()
        status = self._retract_and_wait()
        self._report(_Asked(self.last_frame, 0.0, -self.cfg.max_speed_mm_s, {"asked": asked}, retracting=True),
                     status)

    def on_stop(self) -> None:
        """The session is over: the port goes back to its start, and the file records that it got there."""
        self._retract_and_report()
        self.stack.close()

    def on_fail(self) -> None:
        """Best effort, the first failure being the one reported: stop, retract, report, close the port."""
        with contextlib.suppress(LickportError, OSError):
            self.stage.stop()
            self._retract_and_report()
        self.stack.close()  # stops the stage, then closes the port (and the twin)
