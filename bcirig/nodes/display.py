"""Display node: the task's feedback on the mouse's monitor, and when each change was actually presented.

Wiring only. The stage :class:`bcirig.gui.presenter.DisplayPresenter` decides which feedback is a
change and which photodiode code goes with it; the window (OpenGL, or the QPainter fallback when the
platform has no OpenGL: one log line says so) draws and swaps. A change is drawn and swapped in the
same loop turn it arrived in (after the batch of messages that held it), the drifting grating is
redrawn once per refresh, and each presented change goes to the recorder as a ``Presentation`` with
the feedback's arrival time here and the time after the swap.
"""

from __future__ import annotations

import math
import sys
import time

from bcirig.config import load_protocol, load_rig
from bcirig.gui.grating import GratingSettings
from bcirig.gui.presenter import DisplayPresenter, ScreenState
from bcirig.messages import Feedback, LogLevel, Message, Screen
from bcirig.nodes.base import HEARTBEAT_S, Node, NodeSpec

DEFAULT_REFRESH_HZ = 60.0


class DisplayNode(Node):
    """Shows each frame's feedback; greys the screen on SAFE. Qt events are pumped from the node loop."""

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        from bcirig.gui.display import application, open_display

        rig = load_rig(spec.rig_path)
        protocol = load_protocol(spec.protocol_path)
        self.app = application()
        size = spec.options.get("size")
        settings = GratingSettings.from_config(protocol.feedback, rig.display)
        self.window, self.opened = open_display(settings, screen_index=rig.display.screen,
                                                size=(int(size[0]), int(size[1])) if size else None)
        print(self.opened, file=sys.stderr, flush=True)  # into the node's log
        screen = self.app.primaryScreen()
        rate = screen.refreshRate() if screen is not None else 0.0
        self.refresh_s = 1.0 / (rate if rate and math.isfinite(rate) and rate > 1 else DEFAULT_REFRESH_HZ)
        self.presenter = DisplayPresenter()
        self.window.set_state(self.presenter.shown, self.presenter.code)
        self.last_draw = time.monotonic()
        self.last_frame = -1
        self.safe_state = False
        self._present(self.last_draw)  # the opening grey screen and black patch, before the session starts

    def on_start(self) -> None:
        self.log(LogLevel.INFO, self.opened)

    def next_wakeup(self, now: float) -> float:
        if self.presenter.due or self.presenter.shown.screen is Screen.GRATING:
            return self.last_draw + self.refresh_s
        return now + HEARTBEAT_S

    def on_message(self, msg: Message) -> None:
        if isinstance(msg, Feedback):
            self.last_frame = msg.frame
            self.counters["feedback_shown"] = self.counters.get("feedback_shown", 0) + 1
            if msg.screen is Screen.GRATING:
                self.counters["grating_frames"] = self.counters.get("grating_frames", 0) + 1
            if not self.safe_state:
                self.presenter.feedback(msg, time.monotonic_ns())

    def _present(self, now: float) -> None:
        """Draw the wanted state (drifted to ``now``) and swap; record it if it is a change."""
        p = self.presenter
        self.window.set_state(p.target, p.draw_code)
        self.window.advance(now - self.last_draw)
        t_ns = self.window.present()
        self.last_draw = now
        rec = p.presented(t_ns, self.window.clock)
        if rec is not None:
            self.pub.publish(rec)
            self.counters["presentations"] = p.count
            self.counters["skipped_changes"] = self.counters.get("skipped_changes", 0) + rec.skipped
        self.counters["repaints"] = self.window.frames_drawn

    def on_tick(self, now: float) -> None:
        self.app.processEvents()
        if self.presenter.due or (self.presenter.shown.screen is Screen.GRATING
                                  and now - self.last_draw >= self.refresh_s):
            self._present(time.monotonic())

    def on_safe(self, reason: str) -> None:
        self.safe_state = True
        self.presenter.want(ScreenState(), self.last_frame, time.monotonic_ns())
        self._present(time.monotonic())
        self.app.processEvents()

    def on_stop(self) -> None:
        if self.presenter.due:  # a last change that arrived with the stop: shown and recorded, not lost
            self._present(time.monotonic())
        self.window.close_window()
        self.app.processEvents()
