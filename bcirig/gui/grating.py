"""What the mouse's monitor shows, as pixels: drifting sinusoidal grating, grey or black. No Qt here.

Angle convention: ``angle_deg`` is the direction of the grating's normal (the direction it drifts), in
degrees counter-clockwise from rightward on the screen; 0 deg = vertical bars drifting right, 90 deg =
horizontal bars drifting up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bcirig.messages import Screen

if TYPE_CHECKING:
    from bcirig.config import DisplayConfig, FeedbackConfig

GREY = 128


@dataclass(frozen=True)
class GratingSettings:
    """How the display draws: the protocol's grating and the rig's screen geometry and photodiode patch."""

    spatial_freq_cpd: float = 0.04
    temporal_freq_hz: float = 2.0
    contrast: float = 1.0
    width_cm: float = 52.0
    distance_cm: float = 20.0
    patch_corner: str = "bottom_left"  # or "none"
    patch_px: int = 40
    swap_interval: int = 1

    @classmethod
    def from_config(cls, feedback: FeedbackConfig, display: DisplayConfig) -> GratingSettings:
        """From a protocol's ``[feedback]`` and a rig's ``[display]``."""
        return cls(spatial_freq_cpd=feedback.spatial_freq_cpd, temporal_freq_hz=feedback.temporal_freq_hz,
                   contrast=feedback.contrast, width_cm=display.width_cm, distance_cm=display.distance_cm,
                   patch_corner=display.patch_corner, patch_px=display.patch_px, swap_interval=display.swap_interval)

    def period_px(self, width_px: int) -> float:
        """The grating's period on a screen ``width_px`` wide."""
        return period_px(self.spatial_freq_cpd, width_px, self.width_cm, self.distance_cm)


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
                 period_px: float = 40.0, contrast: float = 1.0) -> np.ndarray:
    """The whole screen for a feedback state."""
    if screen is Screen.GRATING and math.isfinite(angle_deg):
        return grating_image(angle_deg, phase, height, width, period_px=period_px, contrast=contrast)
    level = 0 if screen is Screen.BLACK else GREY
    return np.full((height, width), level, np.uint8)


def px_per_degree(width_px: int, width_cm: float, distance_cm: float) -> float:
    """Pixels per degree of visual angle at the centre of a flat screen ``distance_cm`` from the eye.

    The derivative of ``distance * tan(angle)`` at the centre: away from it a degree covers more
    pixels (no spherical correction; state the screen's geometry in the rig file).
    """
    return width_px / width_cm * distance_cm * math.pi / 180.0


def period_px(spatial_freq_cpd: float, width_px: int, width_cm: float, distance_cm: float) -> float:
    """The grating's period in pixels for a spatial frequency in cycles per degree."""
    return px_per_degree(width_px, width_cm, distance_cm) / spatial_freq_cpd


def grating_luminance(contrast: float) -> tuple[float, float]:
    """(mean, amplitude) of the grating in framebuffer units 0..1: the mean is the grey screen's."""
    mean = GREY / 255.0
    return mean, min(mean, 1.0 - mean) * contrast


def dominant_frequency(img: np.ndarray) -> tuple[float, float]:
    """(orientation in degrees modulo 180, spatial frequency in cycles per pixel) of the strongest peak.

    The peak is refined to sub-bin precision by a parabola through its neighbours on each axis, so an
    image that holds a non-integer number of periods is still read to a fraction of a degree.
    """
    win = np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))  # no leakage from the image's edges
    f = np.abs(np.fft.fftshift(np.fft.fft2((img.astype(np.float64) - img.mean()) * win)))
    cy, cx = np.array(f.shape) // 2
    f[cy, cx] = 0
    iy, ix = np.unravel_index(np.argmax(f), f.shape)

    def refine(a: float, b: float, c: float) -> float:
        den = a - 2 * b + c
        return 0.0 if den == 0 else 0.5 * (a - c) / den

    dy = refine(f[iy - 1, ix], f[iy, ix], f[(iy + 1) % f.shape[0], ix]) if iy > 0 else 0.0
    dx = refine(f[iy, ix - 1], f[iy, ix], f[iy, (ix + 1) % f.shape[1]]) if ix > 0 else 0.0
    fy = -(iy + dy - cy) / f.shape[0]  # FFT rows grow downward like screen rows: flip the vertical sign
    fx = (ix + dx - cx) / f.shape[1]
    return math.degrees(math.atan2(fy, fx)) % 180.0, math.hypot(fx, fy)


def dominant_orientation(img: np.ndarray) -> float:
    """Direction (deg, modulo 180) of the strongest spatial frequency: how a test reads the angle back."""
    f = np.abs(np.fft.fftshift(np.fft.fft2(img.astype(np.float64) - img.mean())))
    cy, cx = np.array(f.shape) // 2
    f[cy, cx] = 0
    iy, ix = np.unravel_index(np.argmax(f), f.shape)
    # FFT rows grow downward like screen rows: flip the sign of the vertical frequency.
    return math.degrees(math.atan2(-(iy - cy) / f.shape[0], (ix - cx) / f.shape[1])) % 180.0
