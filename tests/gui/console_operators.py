"""Test-only consoles and set-up operators, started by the supervisor in place of the real ones.

The console subclasses are the real console node with one behaviour added (node option ``node_class``,
as in tests/faults.py): one that uses its own controls from a script, one that is killed mid-session,
one whose drawing is slow. The set-up operators are the real set-up window driven by mouse clicks
(``setup_window`` option ``window_class``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from PyQt6.QtCore import QPoint, Qt, QTimer
from PyQt6.QtTest import QTest
from PyQt6.QtWidgets import QMessageBox

from bcirig.gui.setup_window import SetupWindow
from bcirig.nodes.console import ConsoleNode

STEP_FRAMES = 5  # the scripted console's actions after the first: one per redraw, this many frames apart


class ScriptedConsole(ConsoleNode):
    """Uses its own buttons, one per redraw, from ``script`` ([command, value], ...); confirms each dialog.
    The first action goes on the first redraw, the others once STEP_FRAMES more frames have been seen."""

    def _refresh(self) -> None:
        self._act()
        super()._refresh()

    def _act(self) -> None:
        w = self.window
        script: list[list[object]] = self.spec.options["script"]
        done = self.counters.get("script_done", 0)
        if w.pending_dialog is not None:
            yes = w.pending_dialog.button(QMessageBox.StandardButton.Yes)
            assert yes is not None
            yes.click()
            return
        if done >= len(script) or (done and (not w.data.frames or w.data.frames[-1] < STEP_FRAMES * done)):
            return
        command, value = str(script[done][0]), float(str(script[done][1]))
        if command == "reward":
            w.reward_ul.setValue(value)
        elif command == "flush":
            w.flush_ms.setValue(value)
        w.buttons[command].click()
        self.counters["script_done"] = done + 1


class KilledConsole(ConsoleNode):
    """Killed (SIGKILL, as by a crash or the window manager) once it has drawn frame ``kill_at_frame``."""

    def _refresh(self) -> None:
        super()._refresh()
        if self.window.data.frames and self.window.data.frames[-1] >= int(self.spec.options["kill_at_frame"]):
            os.kill(os.getpid(), signal.SIGKILL)


class SlowConsole(ConsoleNode):
    """A console whose every redraw takes ``draw_s`` seconds (a slow machine, a huge window)."""

    def _refresh(self) -> None:
        time.sleep(float(self.spec.options["draw_s"]))
        super()._refresh()


def _click(window: SetupWindow, y: float, x: float) -> None:
    """A real left click on image pixel (y, x) of the set-up window's view."""
    view = window.view
    pos = view.mapFromScene(window.scene_point(y, x))
    viewport = view.viewport()
    assert viewport is not None
    QTest.mouseClick(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,  # type: ignore[call-overload]
                     QPoint(pos.x(), pos.y()))


class PickingOperator(SetupWindow):
    """Clicks the first ``2 * PER_GROUP`` candidates, P+ and P- alternately, then accepts."""

    PER_GROUP = 3

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        QTimer.singleShot(200, self.operate)

    def operate(self) -> None:
        """The clicks, through the view as an operator makes them."""
        for k in range(2 * self.PER_GROUP):
            self.group_box.setCurrentText("P+" if k % 2 == 0 else "P-")
            cy, cx = self.editor.candidates[k].centroid_yx
            _click(self, cy, cx)
        self.buttons["accept"].click()


class RejectingOperator(SetupWindow):
    """Looks, then rejects the set-up."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        QTimer.singleShot(200, self.buttons["reject"].click)


class AligningOperator(SetupWindow):
    """Day 2 on: confirms the proposed field-of-view alignment and accepts the proposed ROIs as they are."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        QTimer.singleShot(200, self.operate)

    def operate(self) -> None:
        """Accepting first is refused (the alignment is not confirmed yet); then confirm, then accept."""
        self.buttons["accept"].click()
        (self.folder.parent / f"{self.folder.name}.refused").write_text(self.status.text())
        self.buttons["confirm_alignment"].click()
        self.buttons["accept"].click()


class MisalignedOperator(SetupWindow):
    """Day 2 on: rejects the proposed field-of-view alignment."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        QTimer.singleShot(200, self.buttons["reject_alignment"].click)
