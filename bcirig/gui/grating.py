"""What the mouse's monitor shows, as pixels: drifting sinusoidal grating, grey or black. No Qt here.

Angle convention: ``angle_deg`` is the direction of the grating's normal (the direction it drifts), in
degrees counter-clockwise from rightward on the screen; 0 deg = vertical bars drifting right, 90 deg =
horizontal bars drifting up.
"""

from __future__ import annotations

import math

import numpy as np

from bcirig.messages import Screen

GREY = 128


def grating_image(
    angle_deg: float, phase: float, height: int, width: int, *, period_px: float = 40.0, contrast: float = 1.0
) -> np.ndarray:
    """A (height, width) uint8 sinusoidal grating; mean luminance is the grey screen's."""
    theta = math.radians(angle_deg)
    k = 2 * math.pi / period_px
    x = np.arange(width, dtype=np.float32) - width / 2
    y = (height / 2 - np.arange(height, dtype=np.float32))  # screen rows grow downward; y grows upward
    # Separable: sin(a + b) = sin a cos b + cos a sin b, two outer products instead of a 2-D sin.
    ax = k * math.cos(theta) * x + phase
    by = k * math.sin(theta) * y
    wave = np.outer(np.cos(by), np.sin(ax)) + np.outer(np.sin(by), np.cos(ax))
    img = GREY + (GREY - 1) * contrast * wave
    return np.clip(img, 0, 255).astype(np.uint8)


def screen_image(screen: Screen, angle_deg: float, phase: float, height: int, width: int,
                 period_px: float = 40.0) -> np.ndarray:
    """The whole screen for a feedback state."""
    if screen is Screen.GRATING and math.isfinite(angle_deg):
        return grating_image(angle_deg, phase, height, width, period_px=period_px)
    level = 0 if screen is Screen.BLACK else GREY
    return np.full((height, width), level, np.uint8)


def dominant_orientation(img: np.ndarray) -> float:
    """Direction (deg, modulo 180) of the strongest spatial frequency: how a test reads the angle back."""
    f = np.abs(np.fft.fftshift(np.fft.fft2(img.astype(np.float64) - img.mean())))
    cy, cx = np.array(f.shape) // 2
    f[cy, cx] = 0
    iy, ix = np.unravel_index(np.argmax(f), f.shape)
    # FFT rows grow downward like screen rows: flip the sign of the vertical frequency.
    return math.degrees(math.atan2(-(iy - cy) / f.shape[0], (ix - cx) / f.shape[1])) % 180.0
