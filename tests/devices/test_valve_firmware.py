"""The real firmware in simavr: timing read from the emulated pins (simulated time), safety on reset,
retries over a lossy line, the emulator's own lifecycle, and the round-trip tool."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import serial
from valve_rigs import MS_PER_UL, FirmwareRig, firmware_skip_reason

from bcirig.config import ValveConfig, ValveKind
from bcirig.devices import EmulatorError, ValveController, ValveEmulator, open_valve

pytestmark = pytest.mark.firmware

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _needs_firmware() -> None:
    reason = firmware_skip_reason()
    if reason:
        pytest.skip(reason)


def test_valve_closed_after_reset(firmware_rig: FirmwareRig) -> None:
    assert firmware_rig.valve.version().startswith("bcirig-valve 1.0.0 proto=1")
    assert firmware_rig.emu.pin_events("valve") == []  # never driven high during boot
    status = firmware_rig.valve.status()
    assert not status.valve_open and not status.opto_on and status.rewards == 0


def test_ack_time_is_the_pin_edge(firmware_rig: FirmwareRig) -> None:
    """The ack's device_ms is the tick that opened the valve: firmware clock and pins agree."""
    since = firmware_rig.mark()
    ack = firmware_rig.valve.open_valve(30)
    edge = firmware_rig.emu.wait_for_pin("valve", 1, since=since)
    # Tick k happens at simulated time k ms plus the boot time before the timer started (< 1 ms).
    assert 0 <= edge.t_us / 1000 - ack.device_ms < 1


def test_lick_timestamp_matches_sensor_edge(firmware_rig: FirmwareRig) -> None:
    firmware_rig.valve.ping()
    edge = firmware_rig.emu.inject_lick(40)
    [lick] = firmware_rig.wait_licks(1)
    # Sampled by the 1 ms tick and stamped with the first tick that saw the contact; tick k happens
    # within [k, k + 1) ms of simulated time (boot offset), so the stamp is within 1 ms of the edge.
    assert -1 < lick.device_ms - edge.t_us / 1000 < 1


def test_watchdog_also_stops_opto(firmware_rig: FirmwareRig) -> None:
    firmware_rig.valve.set_limits(500, 0, 150)
    since = firmware_rig.mark()
    assert firmware_rig.valve.opto(2000).ok
    [(_, duration)] = firmware_rig.wait_pulses("opto", 1, since)
    assert 145 <= duration <= 151


class LossyPort:
    """A pyserial port that loses the first reply line (as if the cable glitched)."""

    def __init__(self, port: serial.Serial) -> None:
        self._port = port
        self._dropped = False
        self._held = bytearray()
        self.port = port.port
        self.writes: list[bytes] = []

    @property
    def in_waiting(self) -> int:
        return int(self._port.in_waiting)

    @property
    def timeout(self) -> float | None:
        t = self._port.timeout
        return None if t is None else float(t)

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._port.timeout = value

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return int(self._port.write(data))

    def read(self, n: int) -> bytes:
        data: bytes = self._port.read(n)
        if self._dropped:
            return data
        self._held += data
        if b"\n" not in self._held:
            return b""
        line, _, rest = self._held.partition(b"\n")
        if line[:1].isdigit():  # a reply: lose it
            self._dropped = True
            return bytes(rest)
        self._held = bytearray(rest)
        return bytes(line) + b"\n"

    def close(self) -> None:
        self._port.close()


def test_lost_reply_is_retried_without_a_second_reward(firmware_rig: FirmwareRig) -> None:
    lossy = LossyPort(firmware_rig.port)
    valve = ValveController(lossy, ms_per_ul=MS_PER_UL, timeout_s=0.2, retries=2)
    since = firmware_rig.mark()
    ack = valve.open_valve(40)
    assert ack.ok and ack.attempts >= 2
    assert len(set(lossy.writes)) == 1  # every retry re-sent the same seq and line
    firmware_rig.wait_pulses("valve", 1, since)
    assert firmware_rig.valve.status().rewards == 1
    assert firmware_rig.pulse_count("valve", since) == 1


def test_partial_line_is_dropped_with_an_error(firmware_rig: FirmwareRig) -> None:
    since = firmware_rig.mark()
    assert firmware_rig.valve.raw(b"12 R 5", timeout_s=3.0) == "12 ERR PARTIAL"
    assert firmware_rig.valve.raw(b"13 P\n").startswith("13 OK P t=")
    assert firmware_rig.pulse_count("valve", since) == 0


def test_garbage_burst_then_recovers(firmware_rig: FirmwareRig) -> None:
    noise = bytes((i * 37 + 11) % 256 for i in range(600)) + b"\n"
    firmware_rig.valve.raw(noise, timeout_s=3.0)
    assert firmware_rig.valve.ping() > 0
    assert firmware_rig.valve.open_valve(10).ok


def test_calibrate_opens_n_times_respecting_the_interval(firmware_rig: FirmwareRig) -> None:
    firmware_rig.valve.set_limits(500, 100, 2000)
    since = firmware_rig.mark()
    acks = firmware_rig.valve.calibrate(3, 20)
    assert [a.open_ms for a in acks] == [20, 20, 20]
    pulses = firmware_rig.wait_pulses("valve", 3, since)
    assert [d for _, d in pulses] == [pytest.approx(20, abs=1)] * 3
    starts = [s for s, _ in pulses]
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 100 - 1


def test_parallel_emulators_are_independent() -> None:
    with ValveEmulator() as a, ValveEmulator() as b:
        assert a.pty_path != b.pty_path
        with serial.Serial(a.pty_path, 115200) as pa, serial.Serial(b.pty_path, 115200) as pb:
            va = ValveController(pa, ms_per_ul=1.0)
            vb = ValveController(pb, ms_per_ul=1.0)
            assert va.open_valve(15).ok
            assert vb.ping() >= 0
            a.wait_for_pulses("valve", 1)
            assert b.pin_events("valve") == []
            va.close()
            vb.close()


def test_emulator_shuts_down_without_zombies() -> None:
    emu = ValveEmulator().start()
    proc: Any = emu._proc
    emu.close()
    assert proc.returncode is not None
    emu.close()  # twice is fine


def test_missing_build_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(EmulatorError, match="make firmware"):
        ValveEmulator(tmp_path).start()


def test_open_valve_emulated_applies_rig_limits() -> None:
    cfg = ValveConfig(kind=ValveKind.EMULATED, ms_per_ul=20.0, max_open_ms=321, min_interval_ms=123, watchdog_ms=1500)
    with open_valve(cfg) as valve:
        limits = valve.limits()
        assert (limits.max_open_ms, limits.min_interval_ms, limits.watchdog_ms) == (321, 123, 1500)
        ack = valve.reward(100.0)  # 2000 ms asked
        assert ack.ok and ack.open_ms == 321


def test_makefile_is_quiet_and_incremental() -> None:
    out = subprocess.run(["make", "-s", "-C", str(ROOT / "hardware" / "valve-controller")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "" and out.stderr.strip() == ""


def test_roundtrip_tool_numbers() -> None:
    spec = importlib.util.spec_from_file_location("valve_roundtrip", ROOT / "tools" / "valve_roundtrip.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    result = tool.measure(pings=50, pulses=5, pulse_ms=50)
    assert result["ping_round_trip_ms"]["median"] < 50
    assert result["pulse_error_ms"]["max_abs"] < 1.0


def test_emulator_runs_in_real_time(firmware_rig: FirmwareRig) -> None:
    """Simulated time may not run ahead of the wall clock, or baud rate and ms timing would be fake."""
    import time

    firmware_rig.valve.set_limits(500, 0, 2000)
    since = firmware_rig.mark()
    t0 = time.monotonic()
    assert firmware_rig.valve.open_valve(300).ok
    close = firmware_rig.emu.wait_for_pin("valve", 0, since=since)
    wall_s = time.monotonic() - t0
    opened = firmware_rig.emu.wait_for_pin("valve", 1, since=since)
    assert (close.t_us - opened.t_us) / 1000 == pytest.approx(300, abs=1)
    assert wall_s >= 0.295
