"""Measure the valve controller against the emulated firmware: command-to-ack round trip and pulse error.

    .venv/bin/python tools/valve_roundtrip.py [--pings 300] [--pulses 30] [--pulse-ms 50]

Round trips are host wall-clock times (write -> reply read) over the simavr pty at 115200 baud, so they
include serial transmission (~1 ms per 11 bytes) and the firmware's 1 ms tick. Pulse errors are measured
in simulated time from the harness's pin reports: emulated pin edge to edge, minus the acknowledged
open time. Needs `make firmware` first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bcirig.devices import ValveController, ValveEmulator
from bcirig.recording.latency import stats_ms


def _summary(ms: list[float]) -> dict[str, float]:
    """Median, p99 and count of durations (ms): bcirig's one latency statistic."""
    st = stats_ms(ms)
    return {"median": st["median_ms"], "p99": st["p99_ms"], "n": st["n"]}


def measure(pings: int = 300, pulses: int = 30, pulse_ms: int = 50) -> dict[str, Any]:
    """Run the measurement on a fresh emulator; returns the numbers (ms)."""
    import serial

    with ValveEmulator() as emu, serial.Serial(emu.pty_path, 115200, timeout=0.02) as port:
        valve = ValveController(port, ms_per_ul=1.0, timeout_s=0.5, retries=0)
        valve.set_limits(max(500, pulse_ms), 0, 2000)
        valve.version()  # warm-up
        ping_ms = []
        for _ in range(pings):
            t0 = time.monotonic_ns()
            valve.ping()
            ping_ms.append((time.monotonic_ns() - t0) / 1e6)
        ack_ms, errors = [], []
        for _ in range(pulses):
            since = emu.mark()
            ack = valve.open_valve(pulse_ms)
            if not ack.ok:
                raise RuntimeError(f"reward refused: {ack.error}")
            ack_ms.append(ack.round_trip_ms)
            [duration] = emu.wait_for_pulses("valve", 1, 5.0, since)
            errors.append(duration - ack.open_ms)
        valve.close()
    return {
        "ping_round_trip_ms": _summary(ping_ms),
        "reward_ack_ms": _summary(ack_ms),
        "pulse_error_ms": {"mean": statistics.fmean(errors), "max_abs": max(abs(e) for e in errors),
                           "pulse_ms": pulse_ms, "n": len(errors)},
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the measurement as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--pulses", type=int, default=30)
    parser.add_argument("--pulse-ms", type=int, default=50)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.pings, args.pulses, args.pulse_ms), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
