"""Neuropil masks for the traces level: exactly the annulus the pipeline averages around each ROI.

The geometry comes from the pipeline's own :func:`bcirig.processing.extraction.neuropil_pixels`, so the
traces level and the pixels level measure the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bcirig.config import Protocol


def neuropil_masks(rois: Any, protocol: Protocol) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(plane, y, x, weight) of the neuropil annulus of every ROI, in RoiSet order."""
    from bcirig.processing.extraction import neuropil_pixels

    im = protocol.imaging
    ro = protocol.readout
    occupied = np.zeros((im.planes, im.height, im.width), bool)
    for r in rois:
        occupied[r.plane, r.y[r.w > 0], r.x[r.w > 0]] = True
    out = []
    for r in rois:
        y, x = neuropil_pixels(r, occupied[r.plane], ro.neuropil_inner_px, ro.neuropil_outer_px)
        out.append((r.plane, y, x, np.ones(len(y))))
    return out
