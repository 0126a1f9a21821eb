"""Simulated mice that learn, under a simulated two-photon microscope (issue #5).

Public surface:

* :class:`SimulatedMouse` — a ``MouseStage``: ``step(feedback) -> SimFrame`` (pixels) or
  ``step_traces(feedback) -> TraceFrame`` (ROI F and neuropil), ``rois()``, ``reference_image()``,
  ``state()`` to carry learned weights to the next day;
* :class:`SimConfig` and :func:`parse_sim_config` — the protocol's ``[simulation]`` table, validated;
* :class:`MouseState` — what a mouse carries across days.
"""

from bcirig.sim.brain import MouseState, dale_violations
from bcirig.sim.config import RULES, SimConfig, parse_sim_config
from bcirig.sim.mouse import SimulatedMouse, TraceFrame

__all__ = ["RULES", "MouseState", "SimConfig", "SimulatedMouse", "TraceFrame", "dale_violations", "parse_sim_config"]
