"""Neuropil masks for the traces level: exactly the annulus the pipeline averages around each ROI.

The geometry comes from the pipeline's own :func:`bcirig.processing.extraction.neuropil_annuli`, so the
traces level and the pixels level measure the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bcirig.config import Protocol


def neuropil_masks(rois: Any, protocol: Protocol) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(plane, y, x, weight) of the neuropil annulus of every ROI, in RoiSet order."""
    from bcirig.processing.extraction import neuropil_annuli

    im, ro = protocol.imaging, protocol.readout
    annuli = neuropil_annuli(rois, (im.planes, im.height, im.width), ro.neuropil_inner_px, ro.neuropil_outer_px)
    return [(r.plane, y, x, np.ones(len(y))) for r, (y, x) in zip(rois, annuli, strict=True)]
