"""What the benchmarks share: the default (Francioni 2026) processing settings on a frame of a given size."""

from __future__ import annotations

from bcirig.config import Protocol, parse_protocol


def bench_protocol_text(height: int, width: int, rate_hz: float) -> str:
    """TOML of the default (Francioni 2026) processing settings on a frame of this size."""
    return f"""
[protocol]
name = "bench"
[imaging]
height = {height}
width = {width}
frame_rate_hz = {rate_hz}
[registration]
upsample = 10
max_shift_px = 20.0
"""


def bench_protocol(height: int, width: int, rate_hz: float) -> Protocol:
    """The default (Francioni 2026) processing settings on a frame of this size."""
    return parse_protocol(bench_protocol_text(height, width, rate_hz), "<bench>")
