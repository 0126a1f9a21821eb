"""The mouse's monitor drawn with OpenGL: a drifting sinusoidal grating from a small fragment shader.

Why a plain ``QWindow`` with its own ``QOpenGLContext`` (not ``QOpenGLWindow``/``QOpenGLWidget`` or
pyqtgraph's GL): the display node decides when to draw and swap, so a feedback change is drawn and
swapped in the same call, and the time after ``swapBuffers`` returns is the presentation time. The
others draw when Qt's update timer says (``requestUpdate``: a few ms later, or at the next frame
callback), which would add that wait to every change; pyqtgraph's GL is a 3-D scene graph, more than a
full-screen quad needs. The shader computes, per pixel, ``L = mean + amp * sin(k . (p - centre) - phase)``
with ``k`` along the grating's normal (``bcirig.gui.grating``'s angle convention: y grows upward on
the screen, which is OpenGL's own window convention), so the image is exact at any orientation and
the drift costs one uniform per frame. The photodiode patch is a scissored clear over it.

The swap interval comes from the rig (``display.swap_interval``, 1 = one swap per refresh) and is set
on the surface format; whether the platform honours it is the driver's business (Xvfb and Mesa's
llvmpipe have no refresh to wait for, a real monitor does).

Where it runs (measured here, Qt 6.11, Mesa 22.3 llvmpipe): under Xvfb with ``QT_QPA_PLATFORM=xcb``
or ``offscreen`` (Qt's offscreen platform makes GLX contexts when an X display is there). With
``offscreen`` and no X display there is no OpenGL context (EGL surfaceless through ``minimalegl``
finds no config either): :func:`gl_unavailable` says why and the display node falls back to the
QPainter window (:class:`bcirig.gui.display.FeedbackWindow`) with one log line.
"""

from __future__ import annotations

import math
import time

import numpy as np
from PyQt6.QtCore import QEventLoop, QTimer
from PyQt6.QtGui import (
    QExposeEvent,
    QGuiApplication,
    QImage,
    QOpenGLContext,
    QSurface,
    QSurfaceFormat,
    QVector2D,
    QWindow,
)
from PyQt6.QtOpenGL import (
    QOpenGLFramebufferObject,
    QOpenGLFunctions_2_0,
    QOpenGLShader,
    QOpenGLShaderProgram,
    QOpenGLVersionFunctionsFactory,
    QOpenGLVersionProfile,
)

from bcirig.gui.grating import GratingSettings, grating_luminance
from bcirig.gui.photodiode import patch_level, patch_rect
from bcirig.gui.presenter import ScreenState
from bcirig.messages import PresentClock, Screen

GL_TRIANGLE_STRIP = 0x0005
GL_COLOR_BUFFER_BIT = 0x4000
GL_SCISSOR_TEST = 0x0C11

VERTEX = """
attribute vec2 pos;
void main() { gl_Position = vec4(pos, 0.0, 1.0); }
"""
FRAGMENT = """
uniform vec2 k;        // radians per pixel along x and y (y up), the grating's normal times 2 pi / period
uniform vec2 centre;   // pixels: the grating's phase origin is the screen's centre
uniform float phase;   // radians: the drift
uniform float mean;
uniform float amp;
void main() {
    float level = mean + amp * sin(dot(k, gl_FragCoord.xy - centre) - phase);
    gl_FragColor = vec4(level, level, level, 1.0);
}
"""
QUAD = [QVector2D(-1.0, -1.0), QVector2D(1.0, -1.0), QVector2D(-1.0, 1.0), QVector2D(1.0, 1.0)]


class GLUnavailableError(RuntimeError):
    """No OpenGL 2 context (and shader) can be made on this platform."""


def surface_format(swap_interval: int) -> QSurfaceFormat:
    """An OpenGL 2.0 (compatibility) surface with the rig's swap interval."""
    fmt = QSurfaceFormat()
    fmt.setRenderableType(QSurfaceFormat.RenderableType.OpenGL)
    fmt.setVersion(2, 0)
    fmt.setSwapInterval(swap_interval)
    fmt.setSwapBehavior(QSurfaceFormat.SwapBehavior.DoubleBuffer)
    return fmt


def gl_unavailable(swap_interval: int = 1) -> str:
    """Why this process cannot draw with OpenGL ('' when it can); needs the QGuiApplication."""
    ctx = QOpenGLContext()
    ctx.setFormat(surface_format(swap_interval))
    if not ctx.create():
        platform = QGuiApplication.platformName()
        hint = " (Qt's offscreen platform makes OpenGL contexts only with an X display: run under Xvfb)" \
            if platform == "offscreen" else ""
        return f"no OpenGL context on the Qt platform {platform!r}{hint}"
    if ctx.isOpenGLES():
        return "the OpenGL context is OpenGL ES; this display needs desktop OpenGL 2.0"
    return ""


class GLFeedbackWindow(QWindow):
    """Full-screen (or sized) OpenGL window showing a screen state, drifting, with the photodiode patch."""

    clock = PresentClock.SWAP

    def __init__(self, settings: GratingSettings, *, screen_index: int = 0,
                 size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.state = ScreenState()
        self.code = 0
        self.phase = 0.0
        self.frames_drawn = 0
        self.exposed = False
        self._expose_loop: QEventLoop | None = None
        fmt = surface_format(settings.swap_interval)
        self.setSurfaceType(QSurface.SurfaceType.OpenGLSurface)
        self.setFormat(fmt)
        self.setTitle("bcirig — mouse display")
        self.ctx = QOpenGLContext()
        self.ctx.setFormat(fmt)
        if not self.ctx.create():
            raise GLUnavailableError(gl_unavailable(settings.swap_interval) or "QOpenGLContext.create() failed")
        if size is not None:
            self.resize(*size)
            self.show()
        else:
            screens = QGuiApplication.screens()
            if screens:
                target = screens[min(screen_index, len(screens) - 1)]
                self.setScreen(target)
                self.setGeometry(target.geometry())
            self.showFullScreen()
        if not self.ctx.makeCurrent(self):
            raise GLUnavailableError("cannot make the OpenGL context current on the display window")
        profile = QOpenGLVersionProfile()
        profile.setVersion(2, 0)
        gl = QOpenGLVersionFunctionsFactory.get(profile, self.ctx)
        if not isinstance(gl, QOpenGLFunctions_2_0) or not gl.initializeOpenGLFunctions():
            raise GLUnavailableError("no OpenGL 2.0 functions in this context")
        self.gl = gl
        self.program = QOpenGLShaderProgram()
        ok = (self.program.addShaderFromSourceCode(QOpenGLShader.ShaderTypeBit.Vertex, VERTEX)
              and self.program.addShaderFromSourceCode(QOpenGLShader.ShaderTypeBit.Fragment, FRAGMENT))
        self.program.bindAttributeLocation("pos", 0)
        if not ok or not self.program.link():
            raise GLUnavailableError(f"the grating shader does not build: {self.program.log().strip()}")
        self.renderer = str(gl.glGetString(0x1F01))  # GL_RENDERER, for the node's log
        self.swap_interval = self.ctx.format().swapInterval()

    # ------------------------------------------------------------------ state
    def set_state(self, state: ScreenState, code: int) -> None:
        """What to draw on the next :meth:`present`."""
        self.state, self.code = state, code

    def advance(self, dt_s: float) -> None:
        """Drift the grating by ``dt_s`` seconds (one temporal period = 2 pi of phase)."""
        self.phase = (self.phase + 2 * math.pi * self.settings.temporal_freq_hz * dt_s) % (2 * math.pi)

    def pixel_size(self) -> tuple[int, int]:
        """(width, height) of the framebuffer in device pixels."""
        ratio = self.devicePixelRatio()
        return max(1, round(self.width() * ratio)), max(1, round(self.height() * ratio))

    def wait_exposed(self, timeout_s: float = 5.0) -> bool:
        """Process window-system events until the window is on screen (or ``timeout_s`` passes)."""
        if not self.exposed and not self.isExposed():
            loop = QEventLoop()
            self._expose_loop = loop
            QTimer.singleShot(round(timeout_s * 1000), loop.quit)
            loop.exec()
            self._expose_loop = None
        return self.exposed or self.isExposed()

    def exposeEvent(self, ev: QExposeEvent | None) -> None:  # Qt's name
        self.exposed = self.isExposed()
        if self.exposed and self._expose_loop is not None:
            self._expose_loop.quit()

    # ------------------------------------------------------------------ drawing
    def _draw(self, width: int, height: int) -> None:
        gl, s = self.gl, self.settings
        gl.glViewport(0, 0, width, height)
        if self.state.screen is Screen.GRATING:
            mean, amp = grating_luminance(s.contrast)
            kk = 2 * math.pi / s.period_px(width)
            theta = math.radians(self.state.angle_deg)
            p = self.program
            p.bind()
            p.setUniformValue("k", QVector2D(kk * math.cos(theta), kk * math.sin(theta)))
            p.setUniformValue("centre", QVector2D(width / 2, height / 2))
            p.setUniformValue("phase", float(self.phase))
            p.setUniformValue("mean", float(mean))
            p.setUniformValue("amp", float(amp))
            p.enableAttributeArray(0)
            p.setAttributeArray(0, QUAD)
            gl.glDrawArrays(GL_TRIANGLE_STRIP, 0, 4)
            p.disableAttributeArray(0)
            p.release()
        else:
            level = 0.0 if self.state.screen is Screen.BLACK else grating_luminance(0.0)[0]
            gl.glClearColor(level, level, level, 1.0)
            gl.glClear(GL_COLOR_BUFFER_BIT)
        if s.patch_corner != "none":
            left, top, w, h = patch_rect(s.patch_corner, s.patch_px, width, height)
            level = patch_level(self.code) / 255.0
            gl.glEnable(GL_SCISSOR_TEST)
            gl.glScissor(left, height - top - h, w, h)  # OpenGL's window origin is the bottom left
            gl.glClearColor(level, level, level, 1.0)
            gl.glClear(GL_COLOR_BUFFER_BIT)
            gl.glDisable(GL_SCISSOR_TEST)

    def present(self) -> int:
        """Draw the state and swap; returns ``time.monotonic_ns()`` right after ``swapBuffers`` returned."""
        if not self.ctx.makeCurrent(self):
            raise RuntimeError("the display's OpenGL context was lost")
        self._draw(*self.pixel_size())
        self.ctx.swapBuffers(self)
        t_ns = time.monotonic_ns()
        self.frames_drawn += 1
        return t_ns

    def screenshot(self) -> np.ndarray:
        """What :meth:`present` draws now, as a (height, width) uint8 array (rendered into a framebuffer object)."""
        width, height = self.pixel_size()
        self.ctx.makeCurrent(self)
        fbo = QOpenGLFramebufferObject(width, height)
        fbo.bind()
        self._draw(width, height)
        img = fbo.toImage()
        fbo.release()
        return qimage_gray(img)

    def close_window(self) -> None:
        """Release the GL objects and close the window."""
        if self.ctx.makeCurrent(self):
            self.program.removeAllShaders()
            self.ctx.doneCurrent()
        self.close()


def qimage_gray(img: QImage) -> np.ndarray:
    """A QImage as a (height, width) uint8 array of its grey levels (a copy)."""
    img = img.convertToFormat(QImage.Format.Format_Grayscale8)
    ptr = img.constBits()
    assert ptr is not None
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr.asstring(), np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width()].copy()
