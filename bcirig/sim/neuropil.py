"""Neuropil masks for the traces level: the annulus the pipeline averages around each ROI.

Used until/unless the pipeline exposes its own annulus geometry; the rule is the protocol's: pixels
between ``neuropil_inner_px`` and ``neuropil_outer_px`` beyond the ROI's edge (ROI of equivalent
radius around its centroid), on the ROI's plane, excluding every ROI's pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bcirig.config import Protocol


def neuropil_masks(rois: Any, protocol: Protocol) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(plane, y, x, weight) of the neuropil annulus of every ROI, in RoiSet order."""
    im = protocol.imaging
    ro = protocol.readout
    taken = np.zeros((im.planes, im.height, im.width), bool)
    for r in rois:
        taken[r.plane, r.y, r.x] = True
    out = []
    for r in rois:
        cy, cx = r.centroid_yx
        radius = float(np.sqrt(r.npix / np.pi))
        lo, hi = radius + ro.neuropil_inner_px, radius + ro.neuropil_outer_px
        y0, y1 = max(0, int(cy - hi) - 1), min(im.height, int(cy + hi) + 2)
        x0, x1 = max(0, int(cx - hi) - 1), min(im.width, int(cx + hi) + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(yy - cy, xx - cx)
        sel = (d > lo) & (d <= hi) & ~taken[r.plane, yy, xx]
        out.append((r.plane, yy[sel], xx[sel], np.ones(int(sel.sum()))))
    return out
