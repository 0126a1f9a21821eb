"""Real-time processing: motion correction, ROI extraction, F0, dF/F, decoders, smoothing.

Public surface: :class:`Roi`, :class:`RoiSet`, :class:`RoiError`, :class:`Pipeline`,
:func:`make_reference` and the decoder registry :data:`DECODERS`.
"""

from bcirig.processing.decoders import DECODERS
from bcirig.processing.pipeline import Pipeline, make_reference
from bcirig.processing.rois import Roi, RoiError, RoiSet

__all__ = ["DECODERS", "Pipeline", "Roi", "RoiError", "RoiSet", "make_reference"]
