"""Valve node: device commands from the task go to the reward valve controller; acks and licks come back.

The driver (bcirig.devices) does the limits and the I/O; this node only routes. It keeps the firmware's
host watchdog fed with a ping when no command has gone out for a while, and after a SAFE broadcast it
refuses every further reward.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bcirig.config import load_rig
from bcirig.devices import SimulatedValveController, ValveController, execute_command, open_valve
from bcirig.messages import Ack, Action, Command, Event, EventKind, Message
from bcirig.nodes.base import Node, NodeSpec

PING_S = 0.25
LICK_CONTACT_MS = 40.0  # a simulated tongue contact; the firmware debounces 3 ms


class ValveNode(Node):
    """Executes reward / opto commands on the rig's valve controller."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.stack = contextlib.ExitStack()
        self.rig = load_rig(spec.rig_path)
        self.device: ValveController | SimulatedValveController = self.stack.enter_context(open_valve(self.rig.valve))
        self.safe_state = False
        self.last_io = time.monotonic()
        self.frame = -1

    def extra_poll(self) -> list[Any]:
        fd = self.device.fileno()  # the serial port's; None for the simulated twin
        return [fd] if fd is not None and fd >= 0 else []

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Event) and msg.name is EventKind.LICK_CONTACT:
            self.frame = max(self.frame, msg.frame)
            if self.device.lick_input is None:  # a real board's sensor cannot feel a simulated tongue
                self.counters["lick_contacts_unwired"] = self.counters.get("lick_contacts_unwired", 0) + 1
                return
            for _ in range(int(msg.data.get("count", 1))):
                self.device.touch_lick_sensor(LICK_CONTACT_MS)
            return
        if not isinstance(msg, Command):
            return
        t_in = time.monotonic_ns()
        self.frame = msg.frame
        msg.t_ns = {"task_out": msg.t_ns.get("task_out", -1), "device_in": t_in}
        if self.safe_state:
            ack = Ack(frame=msg.frame, command_id=msg.command_id, action=msg.action, ok=False,
                      error="refused: session in safe state", t_ns=msg.t_ns)
        elif msg.action is Action.FLUSH:
            ack = self._flush(msg)
            self.last_io = time.monotonic()
        else:
            ack = execute_command(self.device, msg)
            self.last_io = time.monotonic()
        self.pub.publish(ack, stamp="device_ack")
        key = "acks_ok" if ack.ok else "acks_refused"
        self.counters[key] = self.counters.get(key, 0) + 1

    def _flush(self, msg: Command) -> Ack:
        """An operator's flush: the valve open ``open_ms`` (the driver clamps to max_open_ms and logs)."""
        try:
            done = self.device.open_valve(msg.open_ms)
        except ValueError as exc:
            return Ack(frame=msg.frame, command_id=msg.command_id, action=msg.action, ok=False,
                       error=f"invalid command: {exc}", t_ns=dict(msg.t_ns))
        return Ack(frame=msg.frame, command_id=msg.command_id, action=msg.action, ok=done.ok, error=done.error,
                   open_ms=done.open_ms, device_ms=done.device_ms,
                   t_ns={**msg.t_ns, "valve_sent": done.t_sent_ns, "valve_ack": done.t_ack_ns})

    def on_tick(self, now: float) -> None:
        if now - self.last_io >= PING_S:
            self.device.ping()
            self.last_io = now
        for lick in self.device.poll_licks():
            self.pub.publish(Event(frame=self.frame, name=EventKind.LICK,
                                   data={"device_ms": lick.device_ms, "host_ns": lick.t_ns}), stamp="sent")
            self.counters["licks"] = self.counters.get("licks", 0) + 1

    def on_safe(self, reason: str) -> None:
        if not self.safe_state:
            self.safe_state = True
            self.device.close_valve()  # told to close now, not only at the end

    def on_fail(self) -> None:
        self.stack.close()  # closes the valve, then the port

    def on_stop(self) -> None:
        self.stack.close()
