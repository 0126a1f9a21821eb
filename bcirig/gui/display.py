"""The mouse's monitor: a real Qt window showing the task's feedback (grating, grey, black) and the photodiode patch.

:func:`open_display` makes the OpenGL window (:class:`bcirig.gui.gl_display.GLFeedbackWindow`) where
the platform has OpenGL, else this module's :class:`FeedbackWindow`, which draws the same screen with
QPainter from ``bcirig.gui.grating``'s NumPy image (no swap synchronisation: its presentation time is
after the repaint was flushed, ``PresentClock.RASTER``). Both have one interface: ``set_state``,
``advance``, ``present`` (draw now; returns the presentation time), ``screenshot`` (what ``present`` draws),
``close_window``.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QGuiApplication, QImage, QPainter, QPaintEvent
from PyQt6.QtWidgets import QApplication, QWidget

from bcirig.gui.grating import GratingSettings, screen_image
from bcirig.gui.photodiode import paint_patch
from bcirig.gui.presenter import ScreenState
from bcirig.messages import PresentClock, Screen

TEXTURE_SCALE = 4  # the fallback renders at 1/4 resolution and lets Qt scale: gratings are low spatial frequency


_APPS: list[QApplication] = []  # Qt's one application per process, held so Python never collects it


def application() -> QApplication:
    """The process's QApplication (created on first use, and kept for the process's life)."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(["bcirig-display"])
        _APPS.append(app)
    assert isinstance(app, QApplication)
    return app


class MouseDisplay(Protocol):
    """What the display node drives: the OpenGL window or the QPainter fallback."""

    clock: PresentClock
    frames_drawn: int

    def set_state(self, state: ScreenState, code: int) -> None: ...
    def advance(self, dt_s: float) -> None: ...
    def present(self) -> int: ...
    def screenshot(self) -> np.ndarray: ...
    def close_window(self) -> None: ...


class FeedbackWindow(QWidget):
    """The QPainter fallback: full-screen (or sized) window drawing the screen state from a NumPy image."""

    clock = PresentClock.RASTER

    def __init__(self, settings: GratingSettings | None = None, *, screen_index: int = 0,
                 size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.settings = settings or GratingSettings()
        self.setWindowTitle("bcirig — mouse display")
        self.state = ScreenState()
        self.code = 0
        self.phase = 0.0
        self.frames_drawn = 0
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        if size is not None:
            self.resize(*size)
            self.show()
        else:
            screens = QGuiApplication.screens()
            target = screens[min(screen_index, len(screens) - 1)] if screens else None
            if target is not None:
                self.setGeometry(target.geometry())
            self.showFullScreen()

    def set_state(self, state: ScreenState, code: int) -> None:
        """What to draw on the next :meth:`present`."""
        self.state, self.code = state, code

    def advance(self, dt_s: float) -> None:
        """Drift the grating by ``dt_s`` seconds."""
        self.phase = (self.phase + 2 * np.pi * self.settings.temporal_freq_hz * dt_s) % (2 * np.pi)

    def image(self, height: int, width: int, scale: int = 1) -> np.ndarray:
        """The screen state as a (height, width) uint8 image, the patch in full-resolution pixels / ``scale``."""
        s = self.settings
        # grating_image adds the phase to the argument; the shader subtracts it: the same drift direction
        img = screen_image(self.state.screen, self.state.angle_deg, -self.phase, height, width,
                           period_px=s.period_px(self.width()) / scale, contrast=s.contrast)
        if s.patch_corner != "none":
            paint_patch(img, s.patch_corner, max(1, s.patch_px // scale), self.code)
        return img

    def present(self) -> int:
        """Repaint now (synchronously); returns ``time.monotonic_ns()`` after the window system was given it."""
        self.repaint()
        t_ns = time.monotonic_ns()
        return t_ns

    def screenshot(self) -> np.ndarray:
        """What the window shows now, as a (height, width) uint8 array (a screenshot)."""
        return grab_gray(self)

    def close_window(self) -> None:
        """Close the window."""
        self.close()

    def paintEvent(self, a0: QPaintEvent | None) -> None:  # Qt calls it by this name
        h = max(1, self.height() // TEXTURE_SCALE)
        w = max(1, self.width() // TEXTURE_SCALE)
        img = self.image(h, w, TEXTURE_SCALE)
        data = img.tobytes()  # kept alive until the painter is done with the QImage
        qimg = QImage(data, img.shape[1], img.shape[0], img.shape[1], QImage.Format.Format_Grayscale8)
        painter = QPainter(self)
        if self.state.screen is Screen.GRATING:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(QRectF(self.rect()), qimg)
        painter.end()
        self.frames_drawn += 1


def open_display(settings: GratingSettings, *, screen_index: int = 0, size: tuple[int, int] | None = None,
                 allow_fallback: bool = True) -> tuple[MouseDisplay, str]:
    """The OpenGL window, or (no OpenGL here) the QPainter fallback; with one line saying which and why."""
    from bcirig.gui.gl_display import GLFeedbackWindow, GLUnavailableError, gl_unavailable

    application()
    why = gl_unavailable(settings.swap_interval)
    if not why:
        try:
            win = GLFeedbackWindow(settings, screen_index=screen_index, size=size)
            win.wait_exposed()
            return win, (f"display: OpenGL ({win.renderer}), swap interval {win.swap_interval}, "
                         f"{win.width()}x{win.height()} px")
        except GLUnavailableError as exc:
            why = str(exc)
    if not allow_fallback:
        raise GLUnavailableError(why)
    raster = FeedbackWindow(settings, screen_index=screen_index, size=size)
    return raster, (f"display: {why}; drawing with QPainter instead: swaps are not synchronised to the "
                    f"display and presentation times are after the repaint ({raster.width()}x{raster.height()} px)")


def grab_gray(widget: QWidget) -> np.ndarray:
    """What a widget shows now, as a (height, width) uint8 array (a screenshot)."""
    from bcirig.gui.gl_display import qimage_gray

    return qimage_gray(widget.grab().toImage())
