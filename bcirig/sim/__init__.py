"""Simulated mice that learn, under a simulated two-photon microscope (issue #5).

Public surface:

* :class:`SimulatedMouse` — a ``MouseStage``: ``step(feedback) -> SimFrame`` (pixels) or
  ``step_traces(feedback) -> TraceFrame`` (ROI F and neuropil for ``Pipeline.process_traces``),
  ``rois()``, ``reference_image()``, ``frame_shape``, ``state()`` / ``finish_day()`` to carry learned
  synapses to the next day;
* :class:`SimConfig` and :func:`parse_sim_config` — the protocol's ``[simulation]`` table, validated;
* :class:`MouseState` — what a mouse carries across days; :func:`dale_violations` checks it;
* :func:`bcirig.sim.session.run_day` — one day inline (mouse -> pipeline -> task);
  :func:`bcirig.sim.campaign.main` — ``bcirig simulate`` (days x mice x rules, in parallel).

Modules: ``brain`` (rate network, learning rules), ``footprints`` (geometry), ``optics`` (indicator,
renderer, closed-form ROI traces), ``mouse`` (the stage), ``session``, ``campaign``, ``plot``.
"""

from bcirig.sim.brain import MouseState, dale_violations
from bcirig.sim.config import LearningRule, SimConfig, SimLevel, parse_sim_config
from bcirig.sim.mouse import SimulatedMouse, TraceFrame

__all__ = [
    "LearningRule", "MouseState", "SimConfig", "SimLevel", "SimulatedMouse", "TraceFrame", "dale_violations",
    "parse_sim_config",
]
