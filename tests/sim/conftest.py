"""Short protocols for the simulator's tests (full-size protocols take minutes)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bcirig.config import Protocol, parse_protocol
from bcirig.sim import SimConfig, parse_sim_config

SHORT = """
[protocol]
name = "simtest"
seed = 5
[imaging]
frame_rate_hz = 30.0
planes = 2
bci_plane = 1
height = 128
width = 128
[readout.decoder]
name = "two_population"
[rois]
groups = {{ "P+" = 4, "P-" = 4 }}
dendrites = true
[baseline]
frames = {baseline}
[calibration]
windows = 200
target_hit_fraction = 0.5
[trials]
count = {trials}
length_frames = 300
grey_frames = 15
[outcomes.timeout]
iti_frames = 60
[simulation]
{simulation}
"""


def short_text(baseline: int = 3000, trials: int = 20, simulation: str = "") -> str:
    """TOML of a short two-plane Francioni-like protocol (10-s trials)."""
    return SHORT.format(baseline=baseline, trials=trials, simulation=simulation)


def short_protocol(baseline: int = 3000, trials: int = 20, simulation: str = "") -> Protocol:
    """The short protocol, parsed and validated."""
    return parse_protocol(short_text(baseline, trials, simulation), "short.toml")


def sim_config(protocol: Protocol, **overrides: Any) -> SimConfig:
    """The protocol's [simulation] table with overrides."""
    return dataclasses.replace(parse_sim_config(protocol.simulation, "short.toml"), **overrides)


@pytest.fixture
def protocol() -> Protocol:
    """The short protocol with default simulation parameters."""
    return short_protocol()
