"""The mouse's monitor: a real Qt window showing the task's feedback (grating, grey, black)."""

from __future__ import annotations

import math

import numpy as np
from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QGuiApplication, QImage, QPainter
from PyQt6.QtWidgets import QApplication, QWidget

from bcirig.gui.grating import screen_image
from bcirig.messages import Screen

TEXTURE_SCALE = 4  # render at 1/4 resolution and let Qt scale: gratings are low spatial frequency


def application() -> QApplication:
    """The process's QApplication (created on first use)."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(["bcirig-display"])
    assert isinstance(app, QApplication)
    return app


class FeedbackWindow(QWidget):
    """Full-screen (or sized) window that draws the current feedback, drifting at ``drift_hz``."""

    def __init__(self, *, screen_index: int = 0, size: tuple[int, int] | None = None, drift_hz: float = 2.0,
                 period_px: float = 160.0) -> None:
        super().__init__()
        self.setWindowTitle("bcirig — mouse display")
        self.screen_state = Screen.GREY
        self.angle_deg = float("nan")
        self.phase = 0.0
        self.drift_hz = drift_hz
        self.period_px = period_px
        self.frames_drawn = 0
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        if size is not None:
            self.resize(*size)
        else:
            screens = QGuiApplication.screens()
            target = screens[min(screen_index, len(screens) - 1)] if screens else None
            if target is not None:
                self.setGeometry(target.geometry())
            self.showFullScreen()

    def show_feedback(self, screen: Screen, angle_deg: float) -> None:
        """Set what to draw; repaints on the next event-loop turn."""
        if screen is not self.screen_state or not (
            angle_deg == self.angle_deg or (math.isnan(angle_deg) and math.isnan(self.angle_deg))
        ):
            self.screen_state, self.angle_deg = screen, angle_deg
            self.update()

    def advance(self, dt_s: float) -> None:
        """Drift the grating by ``dt_s`` seconds."""
        if self.screen_state is Screen.GRATING:
            self.phase = (self.phase + 2 * math.pi * self.drift_hz * dt_s) % (2 * math.pi)
            self.update()

    def texture(self) -> np.ndarray:
        """The current image at texture resolution."""
        h = max(1, self.height() // TEXTURE_SCALE)
        w = max(1, self.width() // TEXTURE_SCALE)
        return screen_image(self.screen_state, self.angle_deg, self.phase, h, w, self.period_px / TEXTURE_SCALE)

    def paintEvent(self, event: object) -> None:  # Qt calls it by this name
        img = self.texture()
        data = img.tobytes()  # kept alive until the painter is done with the QImage
        qimg = QImage(data, img.shape[1], img.shape[0], img.shape[1], QImage.Format.Format_Grayscale8)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(QRectF(self.rect()), qimg)
        painter.end()
        self.frames_drawn += 1


def grab_gray(widget: QWidget) -> np.ndarray:
    """What the window shows now, as a (height, width) uint8 array (a screenshot)."""
    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_Grayscale8)
    ptr = img.constBits()
    assert ptr is not None
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr.asstring(), np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width()].copy()
