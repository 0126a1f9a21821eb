"""Task node: readout in; feedback, device commands and events out. The science is in bcirig.control.Task.

Also the task's safety timer: if frames stop arriving for ``safety.frame_timeout_ms`` once the session
runs, or the supervisor declares the session unsafe, the task goes to its safe state (no reward, grey).
"""

from __future__ import annotations

import json
import time

from bcirig.config import load_protocol
from bcirig.control import Task
from bcirig.interfaces import TaskStep
from bcirig.messages import Control, LogLevel, Message, Phase, Readout
from bcirig.nodes.base import Node, NodeSpec

STARTUP_GRACE_S = 5.0


class TaskNode(Node):
    """Steps the trial state machine once per readout."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.protocol = load_protocol(spec.protocol_path)
        carried = spec.options.get("carried")
        self.task = Task(self.protocol, carried=json.loads(carried) if carried else None)
        self.timeout_s = self.protocol.safety.frame_timeout_ms / 1000
        self.last_readout = 0.0
        self.last_frame = -1

    def on_start(self) -> None:
        # The safety timer runs from the start: a first frame that never comes also greys the screen.
        self.last_readout = time.monotonic() + STARTUP_GRACE_S

    def on_message(self, msg: Message) -> None:
        if not isinstance(msg, Readout):
            return
        t_in = time.monotonic_ns()
        self.last_readout = time.monotonic()
        self.last_frame = msg.frame
        step = self.task.step(msg)
        stamps = {k: msg.t_ns.get(k, -1) for k in ("source", "arrive", "published")}
        stamps["task_in"] = t_in
        self._publish(step, stamps)
        self.counters["readouts"] = self.counters.get("readouts", 0) + 1
        self.counters["frame"] = msg.frame  # the supervisor's progress line reads these from the heartbeat
        self.counters["baseline"] = int(step.feedback.phase is Phase.BASELINE)

    def _publish(self, step: TaskStep, stamps: dict[str, int]) -> None:
        out = time.monotonic_ns()
        for cmd in step.commands:
            cmd.t_ns = {**stamps, "task_out": out}
            self.pub.publish(cmd)
        step.feedback.t_ns = {**stamps, "task_out": out}
        self.pub.publish(step.feedback)
        for ev in step.events:
            self.pub.publish(ev, stamp="sent")

    def on_tick(self, now: float) -> None:
        if self.last_readout and not self.task.done and now - self.last_readout > self.timeout_s:
            reason = (f"no frame for {self.timeout_s * 1000:.0f} ms after frame {self.last_frame}"
                      if self.last_frame >= 0 else "no frame arrived after the session started")
            self.log(LogLevel.WARNING, reason, frame=self.last_frame)
            self._publish(self.task.safe(self.last_frame, reason), {})

    def on_operator(self, msg: Control) -> None:
        # Applied on the task's next frame, which records it as an operator event (replay re-applies it there).
        self.task.operate(msg.command, msg.command_id, msg.value)
        self.counters["operator_commands"] = self.counters.get("operator_commands", 0) + 1

    def on_safe(self, reason: str) -> None:
        self._publish(self.task.safe(self.last_frame, reason), {})
