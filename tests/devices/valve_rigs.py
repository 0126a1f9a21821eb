"""Test rigs for the valve controller: the simulated twin and the real firmware in simavr, behind one
small adapter (:class:`TwinRig`, :class:`FirmwareRig`) so a single contract suite runs against both."""

from __future__ import annotations

import select
import shutil
import subprocess
import time
from pathlib import Path

from bcirig.devices import Lick, SimulatedValveController, ValveController, ValveEmulator
from bcirig.devices.emulator import FIRMWARE_DIR, harness_built

MS_PER_UL = 10.0


def _build_firmware() -> str | None:
    """Build the firmware and harness if the toolchain exists; the reason to skip if it does not."""
    if shutil.which("avr-gcc") is None or not Path("/usr/include/simavr/sim_avr.h").is_file():
        if harness_built():
            return None
        return "avr-gcc/simavr not installed (run `make sysdeps` as root): cannot build the valve firmware"
    # The toolchain is here, so a failing build is a test failure, not a skip.
    subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR)], check=True)
    return None


_SKIP_REASON: list[str | None] = []


def firmware_skip_reason() -> str | None:
    """Build once per session; None when the emulator can run."""
    if not _SKIP_REASON:
        _SKIP_REASON.append(_build_firmware())
    return _SKIP_REASON[0]


class FakeClock:
    """An injectable monotonic clock in ns, advanced by hand."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance(self, ms: float) -> None:
        self.ns += round(ms * 1e6)


class TwinRig:
    """The simulated twin on a fake clock; waiting means advancing the clock."""

    kind = "twin"

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.valve = SimulatedValveController(ms_per_ul=MS_PER_UL, clock_ns=self.clock)

    def mark(self) -> dict[str, int]:
        return {name: len(p) for name, p in self.valve.device.pulses.items()}

    def wait_pulses(self, name: str, n: int, since: dict[str, int], timeout_ms: float = 15000) -> list[
            tuple[float, float]]:
        """(start_ms, duration_ms) of the first n pulses after ``since``, advancing time 1 ms at a time."""
        for _ in range(int(timeout_ms)):
            self.valve.device.advance()
            now = self.valve.device.now()
            done = [p for p in self.valve.device.pulses[name][since[name]:] if p.end_ms <= now]
            if len(done) >= n:
                return [(float(p.start_ms), float(p.duration_ms)) for p in done[:n]]
            self.clock.advance(1)
        raise TimeoutError(f"{n} {name} pulse(s) did not complete")

    def pulse_count(self, name: str, since: dict[str, int]) -> int:
        return len(self.valve.device.pulses[name]) - since[name]

    def until_device_ms(self, t_ms: int) -> None:
        self.clock.advance(max(0, t_ms - self.valve.device.now()))

    def inject_lick(self, duration_ms: float) -> None:
        self.valve.inject_lick(duration_ms)

    def wait_licks(self, n: int, timeout_s: float = 5.0) -> list[Lick]:
        return self.valve.poll_licks()

    def close(self) -> None:
        self.valve.close()


class FirmwareRig:
    """The firmware in simavr, driven through pyserial on the harness's pty; time is real."""

    kind = "firmware"

    def __init__(self, emu: ValveEmulator) -> None:
        import serial

        self.emu = emu
        self.port = serial.Serial(emu.pty_path, 115200, timeout=0.02)
        self.valve = ValveController(self.port, ms_per_ul=MS_PER_UL, timeout_s=0.5, retries=2)

    def mark(self) -> int:
        return self.emu.mark()

    def wait_pulses(self, name: str, n: int, since: int, timeout_ms: float = 15000) -> list[tuple[float, float]]:
        self.emu.wait_for_pulses(name, n, timeout_ms / 1000, since)
        return self.emu.pulses(name, since)[:n]

    def pulse_count(self, name: str, since: int) -> int:
        return len([e for e in self.emu.pin_events()[since:] if e.name == name and e.level == 1])

    def until_device_ms(self, t_ms: int) -> None:
        deadline = time.monotonic() + 70
        while self.valve.ping() < t_ms:  # each ping is a round trip: waiting on replies, not sleeping
            assert time.monotonic() < deadline

    def inject_lick(self, duration_ms: float) -> None:
        # Wait for the release too, so a following injection cannot overlap this one.
        since = self.emu.mark()
        self.emu.inject_lick(duration_ms)
        self.emu.wait_for_pin("lick", 0, since=since)

    def wait_licks(self, n: int, timeout_s: float = 5.0) -> list[Lick]:
        licks: list[Lick] = []
        deadline = time.monotonic() + timeout_s
        fd = self.valve.fileno()
        assert fd is not None
        while len(licks) < n and time.monotonic() < deadline:
            select.select([fd], [], [], deadline - time.monotonic())
            licks += self.valve.poll_licks()
        return licks

    def close(self) -> None:
        self.valve.close()
