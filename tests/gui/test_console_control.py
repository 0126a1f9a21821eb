"""The supervisor's check of each operator request (a plain object), and `bcirig console` without a session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bcirig.cli import main
from bcirig.config import load_rig
from bcirig.control_plane import Answer, OperatorDesk, encode_request
from bcirig.messages import Control, ControlAction, OperatorCommand
from tests.conftest import ROOT

RIG = ROOT / "hardware" / "rigs" / "sim.toml"  # valve: 25 ms per ul, max_open_ms 500


def ask(desk: OperatorDesk, command: str, value: float = 0.0, running: bool = True) -> tuple[Answer, Control | None]:
    return desk.decide(encode_request(command, value)[1], running=running, frame=41, t_request_ns=7, source="c")


def test_accepted_requests_are_numbered_and_broadcast_with_their_times() -> None:
    desk = OperatorDesk(load_rig(RIG))
    answer, ctl = ask(desk, "reward", 4.0)
    assert answer.ok and answer.command_id == 1 and "#1 reward 4 ul" in answer.text
    assert ctl is not None and ctl.action is ControlAction.OPERATOR and ctl.command is OperatorCommand.REWARD
    assert (ctl.command_id, ctl.value, ctl.frame, ctl.t_ns["request"]) == (1, 4.0, 41, 7) and ctl.t_ns["console"] > 0
    answer, ctl = ask(desk, "pause", 3.0)  # a value means nothing to pause: it is dropped
    assert answer.ok and answer.command_id == 2 and ctl is not None and ctl.value == 0.0


@pytest.mark.parametrize(("command", "value", "why"), [
    ("reward", 20.5, "reward 20.5 ul: expected 0 (the protocol's volume) to 20 ul"),
    ("reward", -1.0, "reward -1 ul"),
    ("flush", 0.0, "flush 0 ms: expected more than 0 and at most 500 ms"),
    ("flush", 501.0, "flush 501 ms"),
    ("dance", 0.0, "unknown command 'dance'; known: start_baseline, start_trials, pause, resume, reward, flush, stop"),
    ("reward", float("nan"), "is not a number"),
])
def test_refused_requests_say_why_in_one_line_and_are_not_broadcast(command: str, value: float, why: str) -> None:
    desk = OperatorDesk(load_rig(RIG))
    answer, ctl = ask(desk, command, value)
    assert not answer.ok and ctl is None and why in answer.text and "\n" not in answer.text
    assert ask(desk, "resume")[0].command_id == 1  # a refusal takes no number


def test_nothing_is_accepted_before_or_after_the_session_runs_and_stop_is_the_supervisors() -> None:
    desk = OperatorDesk(load_rig(RIG))
    answer, ctl = ask(desk, "pause", running=False)
    assert not answer.ok and "the session is not running" in answer.text and ctl is None
    answer, ctl = ask(desk, "stop")
    assert answer.ok and ctl is None  # the supervisor stops the session itself: no command to the task
    assert not desk.decide(b"{not json", running=True, frame=0, t_request_ns=0, source="c")[0].ok
    assert Answer.decode([b"ack", json.dumps({"command": "x"}).encode()]).text.startswith("unreadable answer")


def test_bcirig_console_without_a_running_session_is_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bcirig: {tmp_path}: no running session here (no endpoints.json in it or its subfolders; the "
                   "supervisor writes one while a session runs)")
