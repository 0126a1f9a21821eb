"""Display node: the task's feedback on the mouse's monitor (a real Qt window, offscreen in tests)."""

from __future__ import annotations

import time

from bcirig.config import load_rig
from bcirig.messages import Feedback, Message, Screen
from bcirig.nodes.base import Node, NodeSpec

REFRESH_S = 1 / 60


class DisplayNode(Node):
    """Shows each frame's feedback; greys the screen on SAFE. Qt events are pumped from the node loop."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        from bcirig.gui.display import FeedbackWindow, application

        rig = load_rig(spec.rig_path)
        self.app = application()
        size = spec.options.get("size")
        self.window = FeedbackWindow(screen_index=rig.display.screen, size=tuple(size) if size else None)
        self.window.show()
        self.last = time.monotonic()
        self.safe_state = False

    def next_wakeup(self, now: float) -> float:
        return self.last + REFRESH_S

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Feedback) and not self.safe_state:
            self.window.show_feedback(msg.screen, msg.angle_deg)
            self.counters["feedback_shown"] = self.counters.get("feedback_shown", 0) + 1
            if msg.screen is Screen.GRATING:
                self.counters["grating_frames"] = self.counters.get("grating_frames", 0) + 1

    def on_tick(self, now: float) -> None:
        if now - self.last >= REFRESH_S:
            self.window.advance(now - self.last)
            self.last = now
        self.app.processEvents()
        self.counters["repaints"] = self.window.frames_drawn

    def on_safe(self, reason: str) -> None:
        self.safe_state = True
        self.window.show_feedback(Screen.GREY, float("nan"))
        self.app.processEvents()

    def on_stop(self) -> None:
        self.window.close()
        self.app.processEvents()
