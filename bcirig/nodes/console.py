"""Console node: the operator's live view. A slow console loses only its own messages (bounded queue)."""

from __future__ import annotations

from bcirig.config import load_protocol
from bcirig.messages import Event, Feedback, Heartbeat, Message, Readout
from bcirig.nodes.base import Node, NodeSpec

REFRESH_S = 0.1
QUEUE = 2000  # messages; beyond this ZeroMQ drops for this subscriber only (counted as gaps)


class ConsoleNode(Node):
    """Feeds the Console window and redraws it ten times a second."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        from bcirig.gui.console import Console
        from bcirig.gui.display import application

        protocol = load_protocol(spec.protocol_path)
        self.app = application()
        self.window = Console(title=protocol.protocol.name, frame_rate_hz=protocol.imaging.frame_rate_hz)
        self.window.show()
        self.next_refresh = 0.0

    def rcvhwm(self) -> int:
        return QUEUE

    def next_wakeup(self, now: float) -> float:
        return self.next_refresh

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Readout):
            self.window.on_readout(msg)
        elif isinstance(msg, Feedback):
            self.window.on_feedback(msg)
        elif isinstance(msg, Event):
            self.window.on_event(msg)
        elif isinstance(msg, Heartbeat) and msg.src == "pipeline":
            self.window.on_source_counters(msg.counters)

    def on_tick(self, now: float) -> None:
        if now >= self.next_refresh:
            self._refresh()
            self.next_refresh = now + REFRESH_S
        self.app.processEvents()

    def _refresh(self) -> None:
        self.window.refresh()
        self.counters["refreshes"] = self.counters.get("refreshes", 0) + 1
        self.counters["trials_seen"] = self.window.trials
        self.counters["hits_seen"] = self.window.hits
        self.counters["dropped_frames_seen"] = self.window.source.get("dropped_frames", -1)

    def on_stop(self) -> None:
        self._refresh()  # the final heartbeat carries what the operator saw last
        shot = self.spec.options.get("screenshot")
        if shot:
            self.window.grab().save(str(shot))
        self.window.close()
        self.app.processEvents()
