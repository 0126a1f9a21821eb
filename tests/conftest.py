"""Shared fixtures: small protocols built from TOML text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent


def protocol_text(**sections: str) -> str:
    """A minimal valid protocol; keyword arguments replace whole sections (name -> TOML body)."""
    base = {
        "protocol": 'name = "t"\nseed = 3',
        "imaging": "frame_rate_hz = 30.0\nheight = 64\nwidth = 64",
        "baseline": "frames = 100",
        "trials": "count = 3\nlength_frames = 40\ngrey_frames = 5",
        "calibration": "windows = 50\ntarget_hit_fraction = 0.5",
        "outcomes.hit": "hold_frames = 6\nreward_on_hold_frame = 3\niti_frames = 4",
        "outcomes.abort": "hold_frames = 5\niti_frames = 4",
        "outcomes.timeout": "iti_frames = 7\nnoise_at_iti_frame = 2",
    }
    base.update({k.replace("__", "."): v for k, v in sections.items()})
    return "\n".join(f"[{name}]\n{body}\n" for name, body in base.items())


@pytest.fixture
def root() -> Path:
    """The repository root."""
    return ROOT
