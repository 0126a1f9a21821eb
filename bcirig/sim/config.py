"""The simulated mouse's parameters: the protocol's free ``[simulation]`` table, validated.

Every number that shapes a simulated result lives here, so it is saved with the results (the
campaign writes :func:`dataclasses.asdict` of the config into every session and the summary).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from bcirig.schema import build, spec


class LearningRule(enum.StrEnum):
    """How the simulated brain learns from feedback and reward (bcirig.sim.brain)."""

    VECTORIZED = "vectorized"  # a per-neuron instructive signal (backpropagation-like)
    SCALAR = "scalar"  # a broadcast reward-prediction error (neuromodulator-like)
    NONE = "none"  # no plasticity
    BLOCKED = "blocked"  # the vectorized rule with block_fraction of its dendritic signal removed


class SimLevel(enum.StrEnum):
    """Fidelity of a simulation: frames rendered from footprints, or the ROI traces directly."""

    PIXELS = "pixels"
    TRACES = "traces"


@dataclass(frozen=True)
class SimConfig:
    """Brain, learning rule and optics of a simulated mouse (``[simulation]`` in a protocol file)."""

    # ---------------------------------------------------------------------------------- brain
    rule: LearningRule = spec(LearningRule.VECTORIZED, doc="learning rule of this mouse")
    level: SimLevel = spec(SimLevel.TRACES, doc="fidelity: render frames or ROI traces")
    days: int = spec(14, min=1, max=1000, doc="`bcirig simulate`: days of training unless --days says otherwise")
    units: int = spec(200, min=20, max=5000, doc="rate units in the network (BCI neurons included)")
    inhibitory_fraction: float = spec(0.2, min=0.05, max=0.5, doc="share of units that are inhibitory")
    tau_ms: float = spec(100.0, min=1.0, max=10000.0, doc="rate time constant")
    spectral_radius: float = spec(0.6, min=0.0, max=0.95, doc="recurrent gain of the initial W_rec")
    rest_rate_hz: float = spec(3.0, min=0.0, max=50.0, doc="bias: the unit's rate without input")
    max_rate_hz: float = spec(30.0, min=1.0, max=500.0, doc="saturation of the rate function")
    noise_hz: float = spec(4.0, min=0.0, max=100.0, doc="SD of the slow private input fluctuation xi")
    noise_tau_ms: float = spec(800.0, min=1.0, max=100000.0, doc="correlation time of xi (OU process)")
    sensory_units_per_channel: int = spec(6, min=1, max=100, doc="E units tuned to each feedback channel")
    sensory_threshold_hz: float = spec(6.0, min=0.0, max=200.0, doc="sensory units' bias below zero")
    sensory_gain_hz: float = spec(20.0, min=0.0, max=200.0, doc="drive of a tuned unit at its preferred value")
    tuning_width: float = spec(0.12, min=0.01, max=2.0, doc="tuning SD, in units of the feedback range")
    context_hz: float = spec(1.0, min=0.0, max=100.0, doc="SD of reward / lick input weights onto other units")
    # ---------------------------------------------------------------------------------- learning
    learning_rate: float = spec(0.00005, min=0.0, max=10.0, doc="vectorized / blocked rule")
    scalar_learning_rate: float = spec(0.00005, min=0.0, max=10.0, doc="scalar (RPE x node perturbation) rule")
    eligibility_ms: float = spec(1500.0, min=1.0, max=100000.0, doc="decay of the synaptic eligibility trace")
    value_trials: float = spec(10.0, min=1.0, max=10000.0, doc="reward-expectation averaging, in trials")
    max_weight: float = spec(0.1, min=0.0, max=100.0, doc="bound on |w| of a plastic synapse onto a BCI unit")
    block_fraction: float = spec(1.0, min=0.0, max=1.0, doc="'blocked' rule: share of the dendritic signal removed")
    contingency_trials: float = spec(0.0, min=0.0, max=10000.0,
                                     doc="engagement: how much the mouse uses what it learned follows whether its "
                                         "hits are rewarded, averaged over about this many hits (Clancy 2014: "
                                         "performance falls when the contingency is degraded and returns when it "
                                         "is reinstated); 0 = always fully engaged")
    omission_signal: float = spec(0.0, min=0.0, max=10.0,
                                  doc="vectorized / blocked: a hit whose reward never came (a degradation phase's "
                                      "hits) sends this much of the opposite instructive signal, so an uncoupled "
                                      "contingency is unlearned (extinction); 0 = omissions teach nothing")
    # ---------------------------------------------------------------------------------- behaviour
    lick_rate_hz: float = spec(0.3, min=0.0, max=20.0, doc="spontaneous licking")
    consummatory_lick_hz: float = spec(7.0, min=0.0, max=20.0, doc="licking right after a reward")
    consummatory_s: float = spec(2.0, min=0.01, max=60.0, doc="decay of post-reward licking")
    lickport_reach_mm: float = spec(7.0, min=0.0, max=1000.0,
                                    doc="feedback.kind = 'lickport' only: a lick touches the spout once the port has "
                                        "travelled this far toward the mouse (Feedback.lickport_mm), at most "
                                        "feedback.lickport_travel_mm; default 7 mm, Daie's whole travel: all the way")
    # ---------------------------------------------------------------------------------- optics
    imaged_neurons: int = spec(40, min=0, max=5000, doc="non-BCI units given a footprint (per plane)")
    soma_radius_px: float = spec(0.0, min=0.0, max=100.0, doc="0 = about 1/64 of the frame side, >= 3 px")
    background_counts: float = spec(120.0, min=0.0, max=30000.0, doc="tissue + neuropil brightness")
    soma_counts: float = spec(150.0, min=0.0, max=30000.0, doc="resting soma brightness above background")
    dendrite_counts: float = spec(100.0, min=0.0, max=30000.0, doc="resting dendrite brightness")
    counts_per_photon: float = spec(2.0, min=0.01, max=1000.0, doc="PMT gain: shot noise var = gain x mean")
    pmt_offset: float = spec(100.0, min=0.0, max=30000.0, doc="dark offset of the digitiser")
    dff_max: float = spec(4.0, min=0.1, max=50.0, doc="GCaMP saturating dF/F")
    half_saturation_spikes: float = spec(16.0, min=0.1, max=1000.0, doc="calcium (in spikes) at dff_max / 2")
    rise_ms: float = spec(60.0, min=1.0, max=5000.0, doc="indicator rise time constant")
    decay_ms: float = spec(700.0, min=10.0, max=20000.0, doc="indicator decay time constant")
    neuropil_coupling: float = spec(0.3, min=0.0, max=5.0, doc="background dF/F per unit population dF/F")
    dendrite_bap: float = spec(0.3, min=0.0, max=5.0, doc="back-propagating share of somatic spikes")
    dendrite_signal_hz: float = spec(8.0, min=0.0, max=200.0, doc="dendritic event rate per unit instructive signal")
    bleach_tau_s: float = spec(7200.0, min=1.0, max=1e9, doc="photobleaching time constant")
    drift: float = spec(0.02, min=0.0, max=0.5, doc="SD of slow brightness drift (fraction)")
    fov_shift_px: float = spec(0.0, min=0.0, max=100.0,
                               doc="day-to-day field-of-view offset, uniform in +-this (whole px; day 1 = none)")
    motion_px: float = spec(1.0, min=0.0, max=20.0, doc="SD of slow rigid brain motion")
    lick_jitter_px: float = spec(1.5, min=0.0, max=20.0, doc="displacement per lick")


def parse_sim_config(table: dict[str, Any], file: str) -> SimConfig:
    """Validate a ``[simulation]`` table; errors name ``simulation.<key>`` in ``file``."""
    return build(SimConfig, table, file, "simulation")
