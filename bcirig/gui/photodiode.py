"""The photodiode patch: a corner square whose brightness says which feedback change the screen shows.

The code. Every change the display presents (a new screen, or the grating at a new orientation)
advances a counter ``n``; the patch shows level ``LEVELS[n % 4]`` = 0, 85, 170, 255 (of 255) until the
next change. Before the first change (the grey screen the display opens with) ``n = 0``: a black patch.
So a photodiode taped over the patch sees a step at every presented change, never less than a third of
full scale (85 -> 0 after 255 is the only step down, and it is the largest), and the level after each
step names the change's position modulo 4: a trace is matched to the session file's ``presentation``
table row by row (``code`` column), and a missing or doubled step shows as a code out of sequence. The
drift of the grating never changes the patch; changes that were replaced before they could be shown
(``Presentation.skipped``) do not advance the counter: the code counts what the screen showed.

Levels are framebuffer values: what the photodiode measures is the monitor's gamma applied to them,
still four distinct, ordered levels. The patch is drawn over the grating, in pixels of the window's own
framebuffer (no scaling), in the rig's ``display.patch_corner`` with side ``display.patch_px``.
"""

from __future__ import annotations

import numpy as np

LEVELS = (0, 85, 170, 255)
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def patch_level(code: int) -> int:
    """The patch's 8-bit level for a code (0..3)."""
    return LEVELS[code % len(LEVELS)]


def code_for_change(presented: int) -> int:
    """The code shown after the ``presented``-th change (0 = none yet)."""
    return presented % len(LEVELS)


def read_code(level: float) -> int:
    """The code nearest a measured patch level (0..255): how a test or an analysis reads it back."""
    return int(np.argmin([abs(level - v) for v in LEVELS]))


def patch_rect(corner: str, size_px: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The patch as (left, top, width, height) in image coordinates (rows grow downward)."""
    if corner not in CORNERS:
        raise ValueError(f"photodiode patch corner {corner!r}: expected one of {', '.join(CORNERS)}")
    side = max(1, min(size_px, width, height))
    left = 0 if corner.endswith("left") else width - side
    top = 0 if corner.startswith("top") else height - side
    return left, top, side, side


def paint_patch(img: np.ndarray, corner: str, size_px: int, code: int) -> np.ndarray:
    """Draw the patch into a (height, width) uint8 image in place (the QPainter fallback); returns it."""
    left, top, w, h = patch_rect(corner, size_px, img.shape[1], img.shape[0])
    img[top : top + h, left : left + w] = patch_level(code)
    return img


def measure_patch(img: np.ndarray, corner: str, size_px: int) -> float:
    """The mean level inside the patch (its outer pixel trimmed) of a screenshot."""
    left, top, w, h = patch_rect(corner, size_px, img.shape[1], img.shape[0])
    if min(w, h) > 2:
        top, left, h, w = top + 1, left + 1, h - 2, w - 2
    return float(img[top : top + h, left : left + w].mean())
