"""Real-time processing: one imaging frame -> one readout (the pipeline stage).

Public surface: :class:`Roi`, :class:`RoiSet`, :class:`RoiError`, :class:`Pipeline`,
:func:`make_reference` and the decoder registry :data:`DECODERS`.

Modules, one job each:

* ``rois``         — ROI geometry (disk, polygon, weighted mask), validation, HDF5-friendly arrays;
* ``registration`` — rigid / piecewise subpixel motion (upsampled DFT cross-correlation);
* ``extraction``   — ROI F and neuropil annuli through sparse operators moved with the brain;
* ``f0``           — baseline rules: sliding percentile (CLOOSE), running mean, KDE mode;
* ``decoders``     — two_population, ensemble, single_neuron, weighted, pca, spike_rate;
* ``smoothing``    — moving mean / EMA of the decoder output;
* ``pipeline``     — the stage tying them together (``Pipeline.process``, ``process_traces``);
* ``replay``       — offline replay with registration on a second thread, identical results;
* ``synthetic``, ``naive`` — test movies with known motion, and the plain-NumPy benchmark baseline.
"""

from bcirig.processing.decoders import DECODERS
from bcirig.processing.pipeline import Pipeline, make_reference
from bcirig.processing.rois import Roi, RoiError, RoiKind, RoiSet

__all__ = ["DECODERS", "Pipeline", "Roi", "RoiError", "RoiKind", "RoiSet", "make_reference"]
