"""Console node: the operator's live view and controls. Wiring only; the window is bcirig.gui.console.

The console's data (readouts, feedback, events, frames, acks) arrives on its own receiver thread
(:class:`~bcirig.gui.console_link.ConsoleLink`), which drains its sockets whatever the window is
doing, so a slow or stuck window never makes a publisher queue messages for it; the node's own loop
hears only heartbeats and the supervisor's control messages. Requests go to the supervisor over the
node's DEALER (the socket it reported READY on) and the supervisor's answers come back on it. The
window is redrawn at most at the screen rate, and at most ``REFRESH_CAP_HZ`` times a second.

In realtime sessions the console runs at the idle scheduling class (Linux ``SCHED_IDLE``, its threads
included): it gets a core only when the loop's processes leave one free, so drawing never delays a frame's
decision; on a loaded machine it lags (its queue drops stale data) instead of the loop. Lockstep keeps the
ordinary class (nice 10): there the loop takes every free cycle and there is no deadline to protect.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bcirig.config import load_protocol
from bcirig.control_plane import Answer, encode_request
from bcirig.messages import Heartbeat, Message
from bcirig.modes import RunMode
from bcirig.nodes.base import Node, NodeSpec
from bcirig.setup import Setup

REFRESH_CAP_HZ = 15.0  # an operator reads traces at this rate; more only costs the machine


class ConsoleNode(Node):
    """Feeds the Console window from its receiver thread and sends the operator's requests."""

    def __init__(self, spec: NodeSpec) -> None:
        if spec.options.get("idle_priority", spec.mode == RunMode.REALTIME) and hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # before any thread starts: all inherit
        data_topics = list(spec.topics)
        super().__init__(dataclasses.replace(spec, topics=[]))  # data comes through the link's thread
        from bcirig.gui.console import Console
        from bcirig.gui.console_link import ConsoleLink, refresh_interval_s
        from bcirig.gui.display import application

        protocol = load_protocol(spec.protocol_path)
        plane = protocol.imaging.bci_plane
        self.app = application()
        self.window = Console(title=protocol.protocol.name, frame_rate_hz=protocol.imaging.frame_rate_hz,
                              steps=protocol.feedback.steps, send=self.send_request)
        if spec.setup_path:
            setup = Setup.load(spec.setup_path)
            self.window.set_setup(setup.roi_set(), setup.reference, plane)
        self.window.show()
        self.refresh_s = refresh_interval_s(self.app, REFRESH_CAP_HZ)
        self.next_refresh = 0.0
        self.link = ConsoleLink([spec.endpoints[n] for n in spec.upstream], data_topics, plane=plane)
        self.link.start()

    def send_request(self, command: str, value: float) -> None:
        """One of the operator's controls, to the supervisor (bcirig.control_plane)."""
        self.dealer.send_multipart(encode_request(command, value))
        self.counters["requests"] = self.counters.get("requests", 0) + 1

    def extra_poll(self) -> list[Any]:
        return [self.dealer]  # the supervisor's answers wake the loop

    def next_wakeup(self, now: float) -> float:
        return self.next_refresh

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Heartbeat):
            self.window.on_heartbeat(msg)

    def on_tick(self, now: float) -> None:
        while self.dealer.poll(0):
            answer = Answer.decode(self.dealer.recv_multipart())
            key = "answers_ok" if answer.ok else "answers_refused"
            self.counters[key] = self.counters.get(key, 0) + 1
            self.window.on_answer(answer)
        if now >= self.next_refresh:
            self._refresh()
            self.next_refresh = now + self.refresh_s
        self.app.processEvents()

    def _refresh(self) -> None:
        from bcirig.gui.console_link import feed

        feed(self.window, *self.link.take())
        self.window.refresh()
        self.counters["refreshes"] = self.counters.get("refreshes", 0) + 1
        self.counters["trials_seen"] = self.window.trials
        self.counters["hits_seen"] = self.window.hits
        self.counters["dropped_frames_seen"] = self.window.source.get("dropped_frames", -1)
        self.counters.update(self.link.counters())

    def on_stop(self) -> None:
        self._refresh()  # the final heartbeat carries what the operator saw last
        self.link.stop()
        shot = self.spec.options.get("screenshot")
        if shot:
            self.app.processEvents()
            self.window.grab().save(str(shot))
        self.window.close()
        self.app.processEvents()

    def on_fail(self) -> None:
        self.link.stop()
