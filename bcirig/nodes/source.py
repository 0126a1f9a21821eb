"""Source node: asks the frame source (the simulated mouse) for frames and publishes them.

Pacing: ``realtime`` publishes frame i at start + i / frame_rate and shows the mouse the newest feedback
received; ``lockstep`` waits for the task's feedback on frame i before producing frame i + 1, so the
run is deterministic and as fast as the machine allows. Stops producing when the task ends the session.
"""

from __future__ import annotations

import time

from bcirig.config import load_protocol, load_rig
from bcirig.messages import Event, EventKind, Feedback, Frame, Message
from bcirig.nodes.base import Node, NodeSpec
from bcirig.setup import make_mouse


class SourceNode(Node):
    """Publishes frames from a simulated source at the imaging rate (or in lockstep with the task)."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.protocol = load_protocol(spec.protocol_path)
        self.mouse = make_mouse(self.protocol, load_rig(spec.rig_path))
        self.period = 1.0 / self.protocol.imaging.frame_rate_hz
        self.lockstep = spec.mode == "lockstep"
        self.index = 0
        self.feedback: Feedback | None = None
        self.awaiting = False  # lockstep: waiting for the verdict on the last frame
        self.finished = False
        self.t0 = 0.0
        self.late = 0
        self.awaiting_since = 0.0
        # lockstep: a verdict that never comes is a broken loop, reported, not waited on forever
        self.verdict_timeout_s = max(10.0, 10 * self.protocol.safety.frame_timeout_ms / 1000)
        # Fault injection for tests: frames published with the wrong shape, as a misconfigured scanner would.
        self.bad_frames = {int(i) for i in spec.options.get("bad_frame_at", [])}

    def on_start(self) -> None:
        self.t0 = time.monotonic()

    def next_wakeup(self, now: float) -> float:
        if self.finished or self.stopping:
            return now + 0.1
        if self.lockstep:
            return now if not self.awaiting else now + 0.1
        return self.t0 + self.index * self.period

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Feedback):
            if self.feedback is None or msg.frame >= self.feedback.frame:
                self.feedback = msg
            if self.lockstep and msg.frame == self.index - 1:
                self.awaiting = False
        elif isinstance(msg, Event) and msg.name in (EventKind.SESSION_END, EventKind.SAFE_STATE):
            self.finished = True

    def on_tick(self, now: float) -> None:
        if self.finished or self.stopping:
            return
        if self.lockstep:
            if not self.awaiting:
                self._produce()
                self.awaiting = True
                self.awaiting_since = now
            elif now - self.awaiting_since > self.verdict_timeout_s:
                raise RuntimeError(f"lockstep: no feedback from the task on frame {self.index - 1} "
                                   f"within {self.verdict_timeout_s:.0f} s (frames or readouts lost?)")
        elif now >= self.t0 + self.index * self.period:
            if now - (self.t0 + self.index * self.period) > self.period:
                self.late += 1
            self._produce()

    def _produce(self) -> None:
        sim = self.mouse.step(self.feedback)
        self.check_crash(self.index)
        data = sim.data[..., : sim.data.shape[-1] // 2] if self.index in self.bad_frames else sim.data
        msg = Frame(frame=self.index, data=data, truth=sim.truth)
        self.pub.publish(msg, stamp="source")
        licks = int(sim.truth.get("licks", 0))
        if licks:  # the simulated tongue touches the rig's lick sensor (the valve controller's input)
            self.pub.publish(Event(frame=self.index, name=EventKind.LICK_CONTACT, data={"count": licks}),
                             stamp="sent")
        self.index += 1
        self.counters["frames"] = self.index
        self.counters["late_frames"] = self.late
