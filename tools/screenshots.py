"""Take the README's screenshots from a real demo session: the set-up window, the console during trials,
and the mouse's display, all on one X screen.

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshots.py docs/screenshots

The session is the demo protocol on the ``sim-display`` rig (console and display windows), lockstep so it
is the same every time. The set-up window is driven by :class:`ShootingOperator` (it clicks four P+ and
four P- candidates, saves ``setup.png``, accepts); the console is :class:`ShootingConsole`, which once the
fifth trial's grating is up saves ``console.png`` and, from a grab of the whole screen cut to the display
window's geometry (``xwininfo``), ``display.png``, then asks the supervisor to stop. Both are started by
the supervisor in place of the real ones (the ``window_class`` and ``node_class`` options), like the
tests' operators; nothing of this is in the package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from PyQt6.QtCore import QPoint, Qt, QTimer
from PyQt6.QtGui import QGuiApplication
from PyQt6.QtTest import QTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tools.screenshots` importable by the node processes the supervisor starts

from bcirig.gui.setup_window import SetupWindow  # noqa: E402
from bcirig.messages import Screen, TrialState  # noqa: E402
from bcirig.nodes.console import ConsoleNode  # noqa: E402

OUT_ENV = "BCIRIG_SCREENSHOTS"
DISPLAY_TITLE = "bcirig — mouse display"
SHOT_TRIAL = 5  # the console is saved during this trial's grating: a few outcomes in the raster by then


def out_dir() -> Path:
    """Where the screenshots go (the tool's argument, handed to the node processes by environment)."""
    return Path(os.environ[OUT_ENV])


class ShootingOperator(SetupWindow):
    """Picks P+ and P- candidates alternately with real clicks, saves the window, accepts."""

    PER_GROUP = 4

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.resize(900, 900)
        QTimer.singleShot(500, self.operate)

    def operate(self) -> None:
        """Click, look, save, accept."""
        viewport = self.view.viewport()
        assert viewport is not None
        for k in range(2 * self.PER_GROUP):
            self.group_box.setCurrentText("P+" if k % 2 == 0 else "P-")
            cy, cx = self.editor.candidates[k].centroid_yx
            pos = self.view.mapFromScene(self.scene_point(cy, cx))
            QTest.mouseClick(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,  # type: ignore[call-overload]
                             QPoint(pos.x(), pos.y()))
        self.editor.selected = None
        self.redraw()
        QGuiApplication.processEvents()
        self.grab().save(str(out_dir() / "setup.png"))
        self.buttons["accept"].click()


def window_geometry(title: str) -> tuple[int, int, int, int] | None:
    """(x, y, width, height) of the X window called ``title``, from ``xwininfo``; None if there is none."""
    try:
        text = subprocess.run(["xwininfo", "-name", title], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    values = {k: int(v) for k, v in re.findall(r"(Absolute upper-left [XY]|Width|Height):\s+(-?\d+)", text)}
    if len(values) < 4:
        return None
    return (values["Absolute upper-left X"], values["Absolute upper-left Y"], values["Width"], values["Height"])


class ShootingConsole(ConsoleNode):
    """The real console; during the fifth trial's grating it saves itself and the display, then stops."""

    def _refresh(self) -> None:
        super()._refresh()
        d = self.window.data
        grating = d.screen == Screen.GRATING and d.state == TrialState.ACTIVE  # the console keeps their values
        if self.counters.get("shot") or d.trial < SHOT_TRIAL or not grating:
            return
        if len(d.frames) and d.frames[-1] - d.last_feedback_frame > 2:
            return  # behind the session: wait for a redraw that shows the current frame
        self.counters["shot"] = 1
        self.app.processEvents()
        self.window.grab().save(str(out_dir() / "console.png"))
        screen = self.app.primaryScreen()
        geometry = window_geometry(DISPLAY_TITLE)
        if screen is not None and geometry is not None:
            # no window manager under Xvfb: every window sits at (0, 0), the console on top; out of the way
            self.window.hide()
            end = time.monotonic() + 0.5  # the display redraws itself (60 Hz) where the console was
            while time.monotonic() < end:
                self.app.processEvents()
                time.sleep(0.02)
            x, y, w, h = geometry
            screen.grabWindow(0, x, y, w, h).save(str(out_dir() / "display.png"))  # type: ignore[arg-type]  # 0: the root
            self.window.show()
        self.send_request("stop", 0.0)


def main(argv: list[str]) -> int:
    """Run the demo session with the shooting operator and console; report what was saved."""
    import tempfile

    from bcirig.cli import has_display
    from bcirig.supervisor import Supervisor

    if not has_display():
        print("screenshots: needs a display: run under xvfb-run -s '-screen 0 1600x1000x24'", file=sys.stderr)
        return 2
    out = Path(argv[0] if argv else ROOT / "docs" / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ[OUT_ENV] = str(out)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="bcirig-shots-") as data:
        sup = Supervisor(ROOT / "protocols" / "demo.toml", ROOT / "hardware" / "rigs" / "sim-display.toml",
                         data_dir=data, mode="lockstep", console=True, setup_console=True, fresh=True,
                         progress=sys.stderr,
                         node_options={"console": {"node_class": "tools.screenshots:ShootingConsole"},
                                       "display": {"size": [800, 500]},
                                       "setup_window": {"window_class": "tools.screenshots:ShootingOperator"}})
        result = sup.run()
    print(f"screenshots: session {result.outcome} ({result.reason or 'ok'})", file=sys.stderr)
    for name in ("setup.png", "console.png", "display.png"):
        path = out / name
        print(f"  {path}: {'saved' if path.is_file() else 'MISSING'}")
    return 0 if all((out / n).is_file() for n in ("setup.png", "console.png", "display.png")) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
