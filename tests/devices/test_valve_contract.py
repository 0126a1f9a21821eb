"""One contract for every valve controller: the simulated twin and the real firmware in simavr.

Pulse lengths are read from the device's own outputs (the twin's pulse record, the emulated pins in
simulated time), so a tolerance here covers nothing but float rounding: the firmware times pulses in
whole 1 ms ticks.
"""

from __future__ import annotations

from typing import Any

import pytest

TOL_MS = 1.0


def test_version_and_ping(rig: Any) -> None:
    assert "proto=1" in rig.valve.version()
    t0 = rig.valve.ping()
    assert t0 >= 0
    assert rig.valve.ping() >= t0


@pytest.mark.parametrize("ms", [10, 50, 200])
def test_valve_pulse_length(rig: Any, ms: int) -> None:
    rig.valve.set_limits(500, 0, 2000)
    since = rig.mark()
    ack = rig.valve.open_valve(ms)
    assert ack.ok and ack.error == ""
    assert ack.open_ms == ms
    [(_, duration)] = rig.wait_pulses("valve", 1, since)
    assert duration == pytest.approx(ms, abs=TOL_MS)


def test_reward_converts_microlitres_with_calibration(rig: Any) -> None:
    since = rig.mark()
    ack = rig.valve.reward(2.5)  # 2.5 µL x 10 ms/µL
    assert ack.ok and ack.open_ms == 25 and ack.requested_ms == 25
    [(_, duration)] = rig.wait_pulses("valve", 1, since)
    assert duration == pytest.approx(25, abs=TOL_MS)


def test_opto_and_reward_opto_start_together(rig: Any) -> None:
    rig.valve.set_limits(500, 0, 2000)
    since = rig.mark()
    ack = rig.valve.opto(30)
    assert ack.ok and ack.opto_ms == 30
    [(_, opto_ms)] = rig.wait_pulses("opto", 1, since)
    assert opto_ms == pytest.approx(30, abs=TOL_MS)

    since = rig.mark()
    ack = rig.valve.reward_opto(4.0, 60)
    assert ack.ok and ack.open_ms == 40 and ack.opto_ms == 60
    [(valve_start, valve_ms)] = rig.wait_pulses("valve", 1, since)
    [(opto_start, opto_ms)] = rig.wait_pulses("opto", 1, since)
    assert (valve_ms, opto_ms) == (pytest.approx(40, abs=TOL_MS), pytest.approx(60, abs=TOL_MS))
    assert opto_start == pytest.approx(valve_start, abs=0.01)  # same device tick


def test_max_open_is_clamped_and_reported(rig: Any) -> None:
    assert rig.valve.set_limits(100, 0, 2000).max_open_ms == 100
    since = rig.mark()
    ack = rig.valve.reward(50.0)  # 500 ms asked
    assert ack.ok and ack.requested_ms == 500 and ack.open_ms == 100
    [(_, duration)] = rig.wait_pulses("valve", 1, since)
    assert duration == pytest.approx(100, abs=TOL_MS)

    # The device clamps by itself too, whatever the host sends.
    since = rig.mark()
    reply = rig.valve.raw(b"4001 R 300\n")
    assert reply.startswith("4001 OK R open=100 req=300 ")
    [(_, duration)] = rig.wait_pulses("valve", 1, since)
    assert duration == pytest.approx(100, abs=TOL_MS)


def test_min_interval_refuses_early_reward(rig: Any) -> None:
    rig.valve.set_limits(500, 300, 2000)
    since = rig.mark()
    first = rig.valve.open_valve(20)
    assert first.ok
    second = rig.valve.open_valve(20)
    assert not second.ok and second.error.startswith("INTERVAL wait=")
    wait_ms = int(second.error.split("=")[1])
    assert 0 < wait_ms <= 300
    rig.until_device_ms(first.device_ms + 300)
    third = rig.valve.open_valve(20)
    assert third.ok, third.error
    assert third.device_ms - first.device_ms >= 300
    pulses = rig.wait_pulses("valve", 2, since)
    assert len(pulses) == 2 and rig.pulse_count("valve", since) == 2  # the refused one never opened


def test_watchdog_closes_valve_when_host_is_silent(rig: Any) -> None:
    rig.valve.set_limits(2000, 0, 200)
    since = rig.mark()
    ack = rig.valve.open_valve(1500)
    assert ack.ok and ack.open_ms == 1500
    # Silence: nothing is sent until the valve has closed.
    [(_, duration)] = rig.wait_pulses("valve", 1, since, timeout_ms=5000)
    assert 195 <= duration <= 200 + TOL_MS, f"watchdog cut at {duration} ms, expected ~200 ms"
    assert rig.valve.status().watchdog_trips >= 1


@pytest.mark.parametrize(
    ("sent", "reply"),
    [
        (b"\x00\xff\xfe\x07garbage\n", "- ERR NOISE"),
        (b"hello\n", "- ERR SYNTAX"),
        (b"5 FOO\n", "5 ERR UNKNOWN"),
        (b"6 R\n", "6 ERR SYNTAX"),
        (b"7 R 0\n", "7 ERR RANGE"),
        (b"8 R 12 x\n", "8 ERR SYNTAX"),
        (b"9 L 0 0 0\n", "9 ERR RANGE"),
        (b"10 P " + b"1" * 60 + b"\n", "10 ERR LONG"),
    ],
)
def test_garbage_gets_an_error_reply(rig: Any, sent: bytes, reply: str) -> None:
    since = rig.mark()
    assert rig.valve.raw(sent) == reply
    assert rig.valve.ping() >= 0  # still answering
    assert rig.pulse_count("valve", since) == 0


def test_lick_from_sensor_edge(rig: Any) -> None:
    t_before = rig.valve.ping()
    rig.inject_lick(1)  # shorter than the debounce: not a lick
    rig.inject_lick(50)
    licks = rig.wait_licks(1)
    assert len(licks) == 1
    assert licks[0].device_ms >= t_before and licks[0].t_ns > 0
    assert rig.valve.status().licks == 1


def test_repeated_seq_never_rewards_twice(rig: Any) -> None:
    rig.valve.set_limits(500, 0, 2000)
    since = rig.mark()
    first = rig.valve.raw(b"4242 R 40\n")
    again = rig.valve.raw(b"4242 R 40\n")  # as if the first reply had been lost and the host retried
    assert first.startswith("4242 OK R open=40 ")
    assert again == first
    rig.wait_pulses("valve", 1, since)
    assert rig.valve.status().rewards == 1
    assert rig.pulse_count("valve", since) == 1
