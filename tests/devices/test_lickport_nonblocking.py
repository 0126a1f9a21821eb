"""The lickport driver without waiting: what the lickport node relies on to never stall its loop.

The twin on a pseudo-terminal through pyserial (the real bytes on a real tty) and in-process; each test
waits on the port's file descriptor with ``select``, never on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator

import pytest

from bcirig.devices import LickportError, LickportStatus, LoopbackPort, ZaberLickport, ZaberStageModel, ZaberTwin
from bcirig.devices.lickport import Setting

UM = 0.047625
STEP_MM = UM / 1000


@pytest.fixture(params=["pty", "loopback"])
def stage(request: pytest.FixtureRequest) -> Iterator[tuple[ZaberLickport, ZaberStageModel]]:
    """A driver on the twin (limits 0..8 mm, 10 mm/s), homed."""
    model = ZaberStageModel(start_microsteps=0)
    with contextlib.ExitStack() as stack:
        if request.param == "pty":
            import serial

            twin = stack.enter_context(ZaberTwin(model))
            port: object = serial.Serial(twin.pty_path, 115200, timeout=0.02)
        else:
            port = LoopbackPort(model)
        lickport = ZaberLickport(port, um_per_microstep=UM, min_mm=0.0, max_mm=8.0, max_speed_mm_s=10.0,
                                 timeout_s=0.2, retries=1)
        stack.callback(lickport.close)
        lickport.home()
        yield lickport, model


def wait_statuses(lickport: ZaberLickport, n: int, timeout_s: float = 5.0) -> list[LickportStatus]:
    """Poll (woken by the port's fd when it has one) until ``n`` position reports came back."""
    out: list[LickportStatus] = []
    deadline = time.monotonic() + timeout_s
    fd = lickport.fileno()
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} position reports"
        out += lickport.poll_replies()
        if fd is not None and len(out) < n:
            select.select([fd], [], [], 0.05)
    return out


def test_requests_return_before_the_reply_and_replies_come_in_order(
        stage: tuple[ZaberLickport, ZaberStageModel]) -> None:
    lickport, model = stage
    assert lickport.request_move_to(2.0) == pytest.approx(2.0, abs=STEP_MM)
    for _ in range(3):
        lickport.request_status()
    assert lickport.in_flight == 4 and lickport.statuses_in_flight == 3
    reports = wait_statuses(lickport, 3)
    positions = [r.position_mm for r in reports]
    assert positions == sorted(positions) and positions[0] >= 0.0 and positions[-1] <= 2.0 + STEP_MM
    assert [r.t_ns for r in reports] == sorted(r.t_ns for r in reports)
    # once it has stopped, the report is the target to a microstep, and the move's reply was read too
    lickport.wait_idle()
    lickport.request_status()
    (done,) = wait_statuses(lickport, 1)
    assert done.position_mm == pytest.approx(2.0, abs=STEP_MM) and not done.busy
    assert lickport.in_flight == 0 and model.position_microsteps() == pytest.approx(2.0 / STEP_MM, abs=1)


def test_a_move_beyond_the_limits_is_clamped_before_it_is_sent(
        stage: tuple[ZaberLickport, ZaberStageModel]) -> None:
    lickport, model = stage
    assert lickport.request_move_to(9.5) == pytest.approx(8.0, abs=STEP_MM)
    lickport.wait_idle()
    assert model.position_microsteps() * STEP_MM <= 8.0
    assert lickport.request_move_to(-3.0) == 0.0
    lickport.wait_idle()
    assert model.position_microsteps() == 0


def test_a_lost_reply_is_asked_again_and_a_silent_stage_is_an_error(
        stage: tuple[ZaberLickport, ZaberStageModel]) -> None:
    lickport, model = stage
    model.drop_replies(1)
    seen = model.commands_seen
    lickport.request_status()
    (report,) = wait_statuses(lickport, 1)  # the second attempt, same message id
    assert report.position_mm == 0.0 and model.commands_seen == seen + 2
    model.muted = True
    lickport.request_status()
    with pytest.raises(LickportError, match=r"no reply to '/1 1 .* get pos' after 2 attempt"):
        wait_statuses(lickport, 1)


def test_a_refused_command_names_itself(stage: tuple[ZaberLickport, ZaberStageModel]) -> None:
    lickport, model = stage
    model.settings[Setting.LIMIT_MAX] = round(1.0 / STEP_MM)  # the stage's own limit, tighter than the rig's
    lickport.request_move_to(3.0)
    with pytest.raises(LickportError, match=r"refused '/1 1 [0-9]+ move abs [0-9]+'.*BADDATA"):
        wait_statuses(lickport, 1)


def test_a_blocking_command_abandons_the_requests_in_flight(stage: tuple[ZaberLickport, ZaberStageModel]) -> None:
    lickport, _model = stage
    lickport.request_move_to(3.0)
    lickport.request_status()
    lickport.stop()  # the safe path: waits for its own reply, drops theirs
    assert lickport.in_flight == 0 and lickport.poll_replies() == []
    assert lickport.position_mm() < 3.0
