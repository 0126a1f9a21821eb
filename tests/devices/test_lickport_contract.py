"""One contract for every Zaber lickport: what a scientist checks before trusting the stage.

Implementations (the ``rig`` fixture):

- ``pty``: the twin on a pseudo-terminal, driven through pyserial: the real bytes on a real tty;
- ``loopback``: the same twin in-process (what a rig with lickport.kind = "simulated" gets);
- ``stage``: a real Zaber stage, when ``$BCIRIG_LICKPORT_RIG`` names a rig file whose ``[lickport]`` has
  kind = "serial" (its limits must include 0..8 mm); skipped otherwise. Tests that inject faults need a
  twin and skip on a real stage. The stage moves: keep the lickport clear of any animal.

Motion is timed by the position reports the stage sends, never by fixed sleeps; one microstep of the
X-LSM stages used here is 0.047625 µm.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from bcirig.config import LickportConfig, LickportKind, load_rig, parse_rig
from bcirig.devices import LickportError, LoopbackPort, ZaberLickport, ZaberStageModel, ZaberTwin, open_lickport
from bcirig.devices.lickport import AxisStatus, ReplyFlag, Setting, format_command, parse_reply
from bcirig.interfaces import Actuator

CFG = LickportConfig(kind=LickportKind.SIMULATED, um_per_microstep=0.047625, min_mm=0.0, max_mm=8.0,
                     max_speed_mm_s=10.0)
STEP_MM = CFG.um_per_microstep / 1000  # one microstep
START_MM = 3.3  # where the twin's carriage was left before homing


class Rig:
    """A lickport under test and, for a twin, the simulated stage behind it (``model``)."""

    def __init__(self, kind: str, lickport: ZaberLickport, model: ZaberStageModel | None,
                 stack: contextlib.ExitStack) -> None:
        self.kind, self.lickport, self.model, self._stack = kind, lickport, model, stack

    def needs_twin(self) -> ZaberStageModel:
        if self.model is None:
            pytest.skip("fault injection needs the twin")
        return self.model

    def close(self) -> None:
        self._stack.close()


def _pty_rig() -> Rig:
    import serial

    stack = contextlib.ExitStack()
    model = ZaberStageModel(start_microsteps=START_MM * 1000 / CFG.um_per_microstep)
    twin = stack.enter_context(ZaberTwin(model))
    port = serial.Serial(twin.pty_path, CFG.baud, timeout=0.02)
    lickport = ZaberLickport(port, um_per_microstep=CFG.um_per_microstep, min_mm=CFG.min_mm, max_mm=CFG.max_mm,
                             max_speed_mm_s=CFG.max_speed_mm_s, timeout_s=0.2, retries=1)
    stack.callback(lickport.close)  # runs before the twin closes
    return Rig("pty", lickport, model, stack)


def _loopback_rig() -> Rig:
    model = ZaberStageModel(start_microsteps=START_MM * 1000 / CFG.um_per_microstep)
    lickport = ZaberLickport(LoopbackPort(model), um_per_microstep=CFG.um_per_microstep, min_mm=CFG.min_mm,
                             max_mm=CFG.max_mm, max_speed_mm_s=CFG.max_speed_mm_s, timeout_s=0.2, retries=1)
    stack = contextlib.ExitStack()
    stack.callback(lickport.close)
    return Rig("loopback", lickport, model, stack)


def _stage_rig() -> Rig:
    path = os.environ.get("BCIRIG_LICKPORT_RIG")
    if not path:
        pytest.skip("no real stage: set BCIRIG_LICKPORT_RIG to a rig file with lickport.kind = 'serial'")
    cfg = load_rig(path).lickport
    if cfg.kind != "serial" or cfg.min_mm > 0.0 or cfg.max_mm < 8.0 or cfg.max_speed_mm_s < 4.0:
        pytest.skip(f"{path}: this suite needs lickport.kind = 'serial', limits including 0..8 mm and "
                    "max_speed_mm_s >= 4")
    stack = contextlib.ExitStack()
    lickport = stack.enter_context(open_lickport(replace(cfg, max_mm=8.0), timeout_s=0.5))
    return Rig("stage", lickport, None, stack)


@pytest.fixture(params=["pty", "loopback", "stage"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """Each implementation, fresh per test."""
    made = {"pty": _pty_rig, "loopback": _loopback_rig, "stage": _stage_rig}[request.param]()
    try:
        yield made
    finally:
        made.close()


def _reports(lickport: ZaberLickport, seconds: float) -> list[tuple[float, float, bool]]:
    """(host time, position mm, moving) from the stage's own reports, for ``seconds``."""
    out: list[tuple[float, float, bool]] = []
    t0 = time.monotonic()
    while not out or out[-1][0] - t0 < seconds:
        status = lickport.status()
        out.append((status.t_ns / 1e9, status.position_mm, status.busy))
        time.sleep(0.005)
    return out


def _until(lickport: ZaberLickport, done: Callable[[float, bool], bool],
           timeout_s: float = 10.0) -> list[tuple[float, float, bool]]:
    """Position reports until ``done(position_mm, moving)`` holds; all of them, for checking the path."""
    out: list[tuple[float, float, bool]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        status = lickport.status()
        out.append((status.t_ns / 1e9, status.position_mm, status.busy))
        if done(status.position_mm, status.busy):
            return out
        assert time.monotonic() < deadline, f"condition not reached in {timeout_s} s; last reports {out[-3:]}"
        time.sleep(0.005)


def test_through_the_actuator_contract_it_goes_where_it_answers(rig: Rig) -> None:
    # The lickport node knows the stage only as an Actuator (mypy checks the signatures): what each call
    # returns is where the stage then goes, and at what speed.
    actuator: Actuator = rig.lickport
    rig.lickport.home()
    target = actuator.move_to(100.0)  # beyond the rig's limit: clamped, and the answer says so
    assert target == pytest.approx(CFG.max_mm, abs=STEP_MM)
    assert rig.lickport.wait_idle(timeout_s=5.0) == pytest.approx(target, abs=STEP_MM)
    assert actuator.position_mm() == pytest.approx(target, abs=STEP_MM)
    speed = actuator.set_speed(-2.0)
    assert speed == pytest.approx(-2.0, rel=1e-4)
    _until(rig.lickport, lambda mm, _moving: mm <= target - 0.2)
    actuator.stop()
    stopped = rig.lickport.wait_idle(timeout_s=2.0)
    assert target - 0.6 < stopped <= target - 0.2  # moved toward 0 (the sign of the speed), then stopped
    assert actuator.position_mm() == stopped


def test_homing_goes_to_zero(rig: Rig) -> None:
    if rig.model is not None:
        assert rig.lickport.position_mm() == pytest.approx(START_MM, abs=STEP_MM)
    assert rig.lickport.home() == 0.0
    assert rig.lickport.position_mm() == 0.0
    assert not rig.lickport.status().busy
    if rig.model is not None:
        assert rig.model.homed and rig.model.position_microsteps() == 0.0


@pytest.mark.parametrize("target_mm", [5.0, 0.25, 7.99])
def test_move_to_ends_within_one_microstep(rig: Rig, target_mm: float) -> None:
    rig.lickport.home()
    assert rig.lickport.move_to(target_mm) == pytest.approx(target_mm, abs=STEP_MM / 2)
    assert rig.lickport.status().busy  # it answered at once and is on its way
    final = rig.lickport.wait_idle(timeout_s=5.0)
    assert abs(final - target_mm) <= STEP_MM
    assert abs(rig.lickport.position_mm() - target_mm) <= STEP_MM


@pytest.mark.parametrize("mm_s", [2.0, -2.0])
def test_speed_for_half_a_second_moves_a_millimetre_in_its_direction(rig: Rig, mm_s: float) -> None:
    rig.lickport.move_to(4.0, wait=True)
    before = rig.lickport.position_mm()
    t_sent = time.monotonic()
    assert rig.lickport.set_speed(mm_s) == pytest.approx(mm_s, rel=1e-4)
    reports = _until(rig.lickport, lambda mm, _moving: abs(mm - before) >= 1.0)
    t_stop = time.monotonic()
    rig.lickport.stop()
    after = rig.lickport.wait_idle(timeout_s=2.0)
    elapsed = reports[-1][0] - t_sent
    assert 0.45 <= elapsed <= 0.75, f"1 mm at 2 mm/s took {elapsed:.3f} s by the stage's reports"
    moved = after - before
    assert math.copysign(1.0, moved) == math.copysign(1.0, mm_s)
    assert abs(moved) == pytest.approx(abs(mm_s) * (t_stop - t_sent), rel=0.1)
    assert all(moving for _, _, moving in reports)


def test_positions_rise_steadily_during_a_constant_speed_move(rig: Rig) -> None:
    rig.lickport.move_to(1.0, wait=True)
    rig.lickport.set_speed(3.0)
    reports = _reports(rig.lickport, 0.4)
    rig.lickport.stop()
    positions = [mm for _, mm, _ in reports]
    assert len(positions) >= 10
    assert all(b >= a for a, b in itertools.pairwise(positions)), positions
    assert positions[-1] - positions[0] > 0.9  # ~3 mm/s x 0.4 s, less the first report's delay
    # speed between consecutive reports, mm/s, where they are far enough apart to measure
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(reports[2:])
             if b[0] - a[0] > 0.004]
    assert sorted(rates)[len(rates) // 2] == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize(("start_mm", "mm_s", "limit_mm"), [(7.5, 4.0, 8.0), (0.5, -4.0, 0.0)])
def test_a_speed_toward_a_limit_stops_at_it(rig: Rig, start_mm: float, mm_s: float, limit_mm: float) -> None:
    rig.lickport.home()
    rig.lickport.move_to(start_mm, wait=True)
    rig.lickport.set_speed(mm_s)
    reports = _until(rig.lickport, lambda _mm, moving: not moving, timeout_s=3.0)
    positions = [mm for _, mm, _ in reports]
    assert all(CFG.min_mm <= mm <= CFG.max_mm for mm in positions), positions
    assert abs(positions[-1] - limit_mm) <= STEP_MM
    # Pushing on: it stays at the limit.
    rig.lickport.set_speed(mm_s)
    held = _reports(rig.lickport, 0.1)
    assert all(abs(mm - limit_mm) <= STEP_MM and not moving for _, mm, moving in held)


def test_out_of_limit_commands_are_clamped(rig: Rig) -> None:
    rig.lickport.home()
    assert rig.lickport.move_to(100.0) == pytest.approx(8.0, abs=STEP_MM)
    assert rig.lickport.wait_idle(timeout_s=5.0) == pytest.approx(8.0, abs=STEP_MM)
    assert rig.lickport.move_to(-3.0) == 0.0
    assert rig.lickport.wait_idle(timeout_s=5.0) == 0.0
    top = rig.lickport.max_speed_mm_s
    assert rig.lickport.set_speed(1000.0) == pytest.approx(top, rel=1e-4)
    assert rig.lickport.set_speed(-1000.0) == pytest.approx(-top, rel=1e-4)
    assert rig.lickport.set_speed(0.0) == 0.0
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            rig.lickport.move_to(bad)
        with pytest.raises(ValueError, match="finite"):
            rig.lickport.set_speed(bad)


def test_the_stage_itself_refuses_moves_beyond_the_rig_limits(rig: Rig) -> None:
    # The host's clamp is not the only guard: the limits were written into the stage.
    rig.lickport.apply_limits()
    beyond = rig.lickport.max_microsteps + 1
    before = rig.lickport.position_mm()
    with pytest.raises(LickportError, match=rf"refused '/1 1 \d+ move abs {beyond}'.*RJ.*BADDATA"):
        rig.lickport.send(f"move abs {beyond}")
    with pytest.raises(LickportError, match=r"refused '/1 1 \d+ fly away'.*BADCOMMAND"):
        rig.lickport.send("fly away")
    assert rig.lickport.position_mm() == before and not rig.lickport.status().busy


def test_stop_stops(rig: Rig) -> None:
    rig.lickport.move_to(2.0, wait=True)
    rig.lickport.set_speed(2.0)
    _until(rig.lickport, lambda mm, _moving: mm >= 2.2)
    rig.lickport.stop()
    stopped = rig.lickport.wait_idle(timeout_s=2.0)
    assert 2.2 <= stopped < 2.6
    after = _reports(rig.lickport, 0.2)
    assert all(mm == stopped and not moving for _, mm, moving in after)


@pytest.mark.parametrize("how", ["noise instead", "truncated instead", "noise before"])
def test_garbage_on_the_line_is_a_clear_error_and_the_next_command_works(rig: Rig, how: str) -> None:
    model = rig.needs_twin()
    rig.lickport.move_to(5.0, wait=True)
    if how == "noise instead":
        model.garble_next_reply(b"\x00\xff\x13garbage\xfe\r\n")
    elif how == "truncated instead":
        model.garble_next_reply(b"@01 1 OK IDLE\r\n")
    else:
        model.precede_next_reply(b"\xfe\xff@01 noise\r\n")
    with pytest.raises(LickportError, match=r"garbled reply to '/1 1 \d+ get pos': b'.*' is not a Zaber"):
        rig.lickport.position_mm()
    assert rig.lickport.position_mm() == pytest.approx(5.0, abs=STEP_MM)
    rig.lickport.move_to(6.0, wait=True)
    assert rig.lickport.position_mm() == pytest.approx(6.0, abs=STEP_MM)


def test_a_lost_reply_is_retried_and_a_silent_stage_names_the_timeout(rig: Rig) -> None:
    model = rig.needs_twin()
    model.drop_replies(1)
    assert rig.lickport.position_mm() == pytest.approx(START_MM, abs=STEP_MM)  # the retry's reply
    model.muted = True
    t0 = time.monotonic()
    with pytest.raises(LickportError, match=r"no reply to '/1 1 \d+ get pos' after 2 attempt\(s\), timeout 200 ms"):
        rig.lickport.position_mm()
    assert 0.35 <= time.monotonic() - t0 < 2.0
    model.muted = False
    assert rig.lickport.position_mm() == pytest.approx(START_MM, abs=STEP_MM)


def test_a_late_reply_is_never_taken_for_a_later_command(rig: Rig) -> None:
    model = rig.needs_twin()
    model.hold_replies(2)  # both attempts' replies to the next command arrive only after the one after it is sent
    with pytest.raises(LickportError, match=r"no reply to '/1 1 \d+ get limit\.max'"):
        rig.lickport.send("get limit.max")  # limit.max is 25 mm of travel, position is 3.3 mm
    assert rig.lickport.position_mm() == pytest.approx(START_MM, abs=STEP_MM)


def test_close_stops_the_stage_and_ends_the_driver(rig: Rig) -> None:
    rig.lickport.move_to(1.0, wait=True)
    rig.lickport.set_speed(2.0)
    rig.lickport.close()
    if rig.model is not None:
        assert not rig.model.busy
    with pytest.raises(LickportError, match="used after close"):
        rig.lickport.position_mm()
    rig.lickport.close()  # twice is fine


# ------------------------------------------------------------------------ wire format and rig file
@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ("@01 1 OK IDLE -- 10000", (1, 1, None, ReplyFlag.OK, AxisStatus.IDLE, "--", "10000")),
        ("@01 1 12 OK BUSY -- 0", (1, 1, 12, ReplyFlag.OK, AxisStatus.BUSY, "--", "0")),
        ("@02 0 7 RJ IDLE WR BADDATA", (2, 0, 7, ReplyFlag.RJ, AxisStatus.IDLE, "WR", "BADDATA")),
    ],
)
def test_reply_lines_parse(line: str, fields: tuple[object, ...]) -> None:
    r = parse_reply(line)
    assert (r.device, r.axis, r.message_id, r.flag, r.status, r.warning, r.data) == fields


@pytest.mark.parametrize("line", ["@01 1 OK IDLE --", "@1 1 OK IDLE -- 0", "@01 1 OK WAIT -- 0", "01 1 OK IDLE -- 0",
                                  "@01 1 OK IDLE -- 0 ", "@01 1 123 OK IDLE -- 0", "@01 1 ok IDLE -- 0"])
def test_malformed_reply_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not a Zaber ASCII reply"):
        parse_reply(line)


def test_command_lines_and_unit_conversions() -> None:
    assert format_command(1, 1, 12, "get pos") == b"/1 1 12 get pos\n"
    assert format_command(1, 1, None, "move abs  10000") == b"/1 1 move abs 10000\n"
    lickport = ZaberLickport(object(), um_per_microstep=0.047625, min_mm=0.0, max_mm=8.0, max_speed_mm_s=5.0)
    assert lickport.mm_to_microsteps(5.0) == 104987  # 5 mm / 0.047625 µm = 104986.9
    assert lickport.speed_to_data(2.0) == 68804  # 41994.75 microsteps/s x 1.6384
    assert lickport.max_microsteps == 167979 and lickport.microsteps_to_mm(167979) <= 8.0


def test_rig_file_lickport_table() -> None:
    base = '[rig]\nname = "t"\ndata_dir = "data"\n'
    assert parse_rig(base).lickport.kind == "none"
    cfg = parse_rig(base + '[lickport]\nkind = "serial"\nport = "/dev/ttyUSB0"\nmax_mm = 12\n').lickport
    assert (cfg.kind, cfg.port, cfg.max_mm, cfg.um_per_microstep) == ("serial", "/dev/ttyUSB0", 12.0, 0.047625)
    with pytest.raises(ValueError, match=r"lickport\.kind = 'fast'"):
        parse_rig(base + '[lickport]\nkind = "fast"\n')
    with pytest.raises(ValueError, match="0 <= min_mm < max_mm"), open_lickport(replace(CFG, min_mm=9.0)):
        pass
    serial = replace(CFG, kind=LickportKind.SERIAL)
    with pytest.raises(LickportError, match=r"lickport\.port is empty"), open_lickport(serial):
        pass


def test_a_simulated_rig_gets_the_twin_with_its_limits_applied() -> None:
    with open_lickport(CFG) as lickport:
        model = lickport._port.model
        assert model.settings[Setting.LIMIT_MAX] == lickport.max_microsteps == 167979  # floor(8 mm / step)
        assert model.settings[Setting.MAXSPEED] == lickport.max_speed_data
        assert lickport.home() == 0.0
        assert abs(lickport.move_to(5.0, wait=True) - 5.0) <= STEP_MM
        lickport.set_speed(10.0)
        assert lickport.wait_idle(timeout_s=2.0) == pytest.approx(8.0, abs=STEP_MM)
    assert not model.busy
