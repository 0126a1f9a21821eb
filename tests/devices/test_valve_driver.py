"""The serial driver against byte-level fake ports, and the twin's own clock: no emulator needed."""

from __future__ import annotations

import logging
import math

import pytest
from valve_rigs import FakeClock

from bcirig.config import ValveConfig, ValveKind
from bcirig.devices import SimulatedValveController, ValveController, ValveError, open_valve
from bcirig.devices.firmware_model import FirmwareModel


class ModelPort:
    """A pyserial-like port whose far end is the firmware model; can lose the next n replies."""

    port = "/dev/ttyMODEL0"

    def __init__(self, clock: FakeClock, lose_replies: int = 0) -> None:
        self.device = FirmwareModel(lambda: clock() / 1e6)
        self.lose_replies = lose_replies
        self.timeout = 0.0
        self.writes: list[bytes] = []
        self._out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        self.device.feed(data)
        for line in self.device.take_output():
            if self.lose_replies and line[0].isdigit():
                self.lose_replies -= 1
                continue
            self._out += line.encode() + b"\n"
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self._out)

    def read(self, n: int) -> bytes:
        data, self._out = bytes(self._out[:n]), self._out[n:]
        return data

    def close(self) -> None:
        self.closed = True


class SilentPort:
    """A port with nothing on the other end."""

    port = "/dev/ttyFAKE0"
    timeout = 0.0

    def __init__(self, junk: bytes = b"") -> None:
        self.junk = junk
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.junk)

    def read(self, n: int) -> bytes:
        return self.junk

    def close(self) -> None:
        pass


class UnpluggedPort(SilentPort):
    def write(self, data: bytes) -> int:
        raise OSError(5, "Input/output error")


def test_lost_replies_are_retried_with_the_same_seq_and_never_reward_twice() -> None:
    clock = FakeClock()
    port = ModelPort(clock, lose_replies=2)
    valve = ValveController(port, ms_per_ul=10.0, timeout_s=0.001, retries=2)
    ack = valve.reward(3.0)
    assert ack.ok and ack.open_ms == 30 and ack.attempts == 3
    assert len(set(port.writes)) == 1 and len(port.writes) == 3
    assert port.device.rewards == 1 and len(port.device.pulses["valve"]) == 1


def test_dead_port_raises_valve_error_naming_the_port() -> None:
    port = SilentPort()
    valve = ValveController(port, ms_per_ul=10.0, timeout_s=0.005, retries=1)
    with pytest.raises(ValveError, match=r"/dev/ttyFAKE0.*no reply.*2 attempt\(s\).*sent nothing"):
        valve.ping()
    assert len(port.writes) == 2 and port.writes[0] == port.writes[1]


def test_garbled_port_raises_valve_error_quoting_the_garbage() -> None:
    valve = ValveController(SilentPort(b"\xff\xfe~~ 9x9 ?\n"), ms_per_ul=10.0, timeout_s=0.005, retries=0)
    with pytest.raises(ValveError, match=r"/dev/ttyFAKE0.*unparseable line"):
        valve.status()


def test_unplugged_port_raises_valve_error() -> None:
    valve = ValveController(UnpluggedPort(), ms_per_ul=10.0, timeout_s=0.005)
    with pytest.raises(ValveError, match=r"/dev/ttyFAKE0.*cannot write"):
        valve.reward(1.0)


def test_close_closes_valve_then_port() -> None:
    port = ModelPort(FakeClock())
    valve = ValveController(port, ms_per_ul=10.0)
    valve.open_valve(100)
    valve.close()
    assert port.writes[-1].split()[1] == b"C" and port.closed
    assert port.device.pulses["valve"][0].duration_ms == 0  # closed at once, not after 100 ms
    with pytest.raises(ValveError, match="after close"):
        valve.ping()
    valve.close()


def test_refused_reward_is_an_ack_not_an_exception() -> None:
    valve = ValveController(ModelPort(FakeClock()), ms_per_ul=10.0)
    valve.set_limits(500, 1000, 2000)
    assert valve.reward(1.0).ok
    ack = valve.reward(1.0)
    assert not ack.ok and ack.error == "INTERVAL wait=1000" and ack.open_ms == 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_invalid_volumes_raise(bad: float) -> None:
    valve = SimulatedValveController(ms_per_ul=10.0, clock_ns=FakeClock())
    with pytest.raises(ValueError, match="reward volume"):
        valve.reward(bad)


@pytest.mark.parametrize(("limits", "key"), [((0, 0, 2000), "max_open_ms"), ((100, -1, 2000), "min_interval_ms"),
                                             ((100, 0, 50), "watchdog_ms"), ((100, 0, 2.5), "watchdog_ms")])
def test_limits_out_of_range_raise(limits: tuple[int, int, int], key: str) -> None:
    valve = SimulatedValveController(ms_per_ul=10.0, clock_ns=FakeClock())
    with pytest.raises(ValueError, match=key):
        valve.set_limits(*limits)


def test_bad_calibration_raises() -> None:
    with pytest.raises(ValueError, match="ms_per_ul"):
        SimulatedValveController(ms_per_ul=0.0)


def test_host_clamp_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    valve = SimulatedValveController(ms_per_ul=10.0, clock_ns=FakeClock())
    valve.set_limits(100, 0, 2000)
    with caplog.at_level(logging.WARNING, logger="bcirig.devices.valve"):
        ack = valve.reward(20.0)
    assert ack.open_ms == 100 and ack.requested_ms == 200
    assert "clamped to max_open_ms=100" in caplog.text


def test_twin_watchdog_cuts_exactly_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    valve = SimulatedValveController(ms_per_ul=10.0, clock_ns=clock)
    valve.set_limits(2000, 0, 200)
    clock.advance(10)
    valve.open_valve(1500)
    clock.advance(1000)
    with caplog.at_level(logging.WARNING, logger="bcirig.devices.valve"):
        assert not valve.status().valve_open
    assert valve.device.pulses["valve"][0].duration_ms == 200
    assert "watchdog closed the valve" in caplog.text


def test_twin_pings_keep_the_valve_open() -> None:
    clock = FakeClock()
    valve = SimulatedValveController(ms_per_ul=10.0, clock_ns=clock)
    valve.set_limits(2000, 0, 200)
    valve.open_valve(1000)
    for _ in range(10):
        clock.advance(100)
        valve.ping()
    assert valve.device.pulses["valve"][0].duration_ms == 1000


def test_twin_licks_carry_device_and_host_time() -> None:
    clock = FakeClock()
    valve = SimulatedValveController(ms_per_ul=10.0, clock_ns=clock)
    clock.advance(123)
    valve.inject_lick(30)
    [lick] = valve.poll_licks()
    assert lick.device_ms == 123 and lick.t_ns == clock()
    assert valve.poll_licks() == []
    assert valve.fileno() is None


def test_twin_calibrate_on_real_clock() -> None:
    valve = SimulatedValveController(ms_per_ul=10.0)
    valve.set_limits(500, 0, 2000)
    acks = valve.calibrate(3, 5)
    assert [a.open_ms for a in acks] == [5, 5, 5]


def test_open_valve_simulated_applies_rig_limits() -> None:
    cfg = ValveConfig(kind=ValveKind.SIMULATED, ms_per_ul=20.0, max_open_ms=300, min_interval_ms=50, watchdog_ms=900)
    with open_valve(cfg) as valve:
        limits = valve.limits()
        assert (limits.max_open_ms, limits.min_interval_ms, limits.watchdog_ms) == (300, 50, 900)
        assert valve.reward(1.0).open_ms == 20
    with pytest.raises(ValveError):
        valve.ping()


def test_open_valve_serial_names_a_missing_port() -> None:
    cfg = ValveConfig(kind=ValveKind.SERIAL, port="/dev/does-not-exist-valve")
    with pytest.raises(ValveError, match="/dev/does-not-exist-valve"), open_valve(cfg):
        pass


def test_execute_command_maps_actions_to_acks() -> None:
    from bcirig.devices import execute_command
    from bcirig.messages import Action, Command

    clock = FakeClock()
    valve = SimulatedValveController(ms_per_ul=10.0, clock_ns=clock)
    valve.set_limits(500, 100, 2000)
    cmd = Command(frame=7, command_id=1, action=Action.REWARD_OPTO, reward_ul=2.0, opto_ms=15.0, t_ns={"task": 5})
    ack = execute_command(valve, cmd)
    assert (ack.frame, ack.command_id, ack.action, ack.ok, ack.open_ms) == (7, 1, Action.REWARD_OPTO, True, 20.0)
    assert ack.t_ns["task"] == 5 and ack.t_ns["valve_ack"] >= ack.t_ns["valve_sent"]
    refused = execute_command(valve, Command(command_id=2, action=Action.REWARD, reward_ul=2.0))
    assert not refused.ok and refused.error.startswith("INTERVAL")
    invalid = execute_command(valve, Command(command_id=3, action=Action.OPTO, opto_ms=math.nan))
    assert not invalid.ok and "opto" in invalid.error
    assert execute_command(valve, Command(command_id=4, action=Action.CLOSE)).ok


def test_both_implementations_satisfy_the_reward_valve_contract() -> None:
    from bcirig.interfaces import RewardValve

    for valve in (SimulatedValveController(ms_per_ul=25.0, clock_ns=FakeClock()),
                  ValveController(ModelPort(FakeClock()), ms_per_ul=25.0)):
        assert isinstance(valve, RewardValve)  # the method names; what they do:
        ack = valve.reward(4.0)
        assert ack.ok and ack.open_ms == 100.0, (type(valve).__name__, ack)  # 4 uL x 25 ms/uL
        valve.close()


def test_reply_without_expected_fields_is_a_valve_error() -> None:
    class OddPort(SilentPort):
        def write(self, data: bytes) -> int:
            self.junk = data.split()[0] + b" OK P\n"  # a ping reply without t=
            return len(data)

    valve = ValveController(OddPort(), ms_per_ul=1.0, timeout_s=0.01)
    with pytest.raises(ValveError, match=r"/dev/ttyFAKE0'?: unexpected reply to ping.*missing t"):
        valve.ping()
