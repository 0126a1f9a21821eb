"""The console in real sessions (supervisor, node processes, ZeroMQ, HDF5; lockstep): its controls reach
the bus and the file, a console that dies or is slow changes nothing, and the set-up can be chosen in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bcirig.messages import OperatorCommand
from bcirig.recording import SessionFile
from bcirig.setup import RoiChoice, SetupError, SetupPhase
from bcirig.supervisor import SessionResult, Supervisor
from tests.conftest import ROOT

PROTOCOL = ROOT / "tests" / "configs" / "e2e.toml"
RIG = ROOT / "hardware" / "rigs" / "sim.toml"
OPS = "tests.gui.console_operators"

pytestmark = pytest.mark.slow


def run(tmp_path: Path, protocol: Path = PROTOCOL, **kw: Any) -> SessionResult:
    return Supervisor(protocol, RIG, data_dir=tmp_path, mode="lockstep", **kw).run()


def node_counters(path: Path) -> dict[str, dict[str, int]]:
    with SessionFile(path) as sf:
        t = sf.table("nodes")
    return {n.decode(): json.loads(c) for n, c in zip(t["node"], t["counters"], strict=True)}


def long_protocol(tmp_path: Path) -> Path:
    """The e2e protocol with a baseline of 1500 frames: a session that outlasts a console's first redraws."""
    p = tmp_path / "long.toml"
    p.write_text(PROTOCOL.read_text().replace("[baseline]\nframes = 300", "[baseline]\nframes = 1500"))
    assert p.read_text() != PROTOCOL.read_text()
    return p


def test_each_control_sends_its_command_and_the_file_records_it_with_its_times(tmp_path: Path) -> None:
    # paused first, so that the session waits for the whole script however fast the machine runs it
    script = [["pause", 0], ["reward", 2.0], ["flush", 150], ["reward", 30.0], ["start_baseline", 0],
              ["start_trials", 0], ["resume", 0], ["stop", 0]]
    result = run(tmp_path, long_protocol(tmp_path), console=True,
                 node_options={"console": {"node_class": f"{OPS}:ScriptedConsole", "script": script}})
    assert result.outcome == "stopped" and "stopped by the operator (console)" in result.reason
    with SessionFile(result.path) as sf:
        op = sf.table("operator")
        frames = sf.table("readout")["frame"]
        applied = {e["data"]["command_id"]: e for e in sf.events() if e["name"] == "operator"}
        cmds, acks = sf.table("commands"), sf.table("acks")
    # 30 ul is above this rig's 500 ms / 25 ms per ul = 20 ul: refused by the supervisor, never broadcast
    assert [c.decode() for c in op["command"]] == [OperatorCommand.PAUSE, OperatorCommand.REWARD,
                                                    OperatorCommand.FLUSH, OperatorCommand.START_BASELINE,
                                                    OperatorCommand.START_TRIALS, OperatorCommand.RESUME]
    assert op["command_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert op["value"].tolist() == [0.0, 2.0, 150.0, 0.0, 0.0, 0.0]
    assert {s.decode() for s in op["source"]} == {"console"}
    t = op["t_ns"]  # sent by the console <= arrived at the supervisor <= recorded, each request later than the last
    assert (t > 0).all() and (np.diff(t, axis=1) >= 0).all() and (np.diff(t[:, 1]) > 0).all()
    # when it came, on the task's clock (its heartbeat's last frame; -1 before the first heartbeat reported one)
    assert ((op["frame"] >= -1) & (op["frame"] <= frames.max())).all() and (np.diff(op["frame"]) >= 0).all()
    # the task's answer to each: on a frame after the request arrived, with the same command and value
    assert sorted(applied) == [1, 2, 3, 4, 5, 6]
    for cid, frame, command, value in zip(op["command_id"], op["frame"], op["command"], op["value"], strict=True):
        e = applied[int(cid)]
        assert e["data"]["command"] == command.decode() and e["data"]["value"] == value and e["frame"] >= frame
    assert applied[1]["data"]["applied"] and applied[6]["data"]["applied"]  # pause, then resume
    # the manual reward and the flush reached the valve as commands, each acknowledged by the controller
    manual = {a.decode(): (ul, ms, cid) for a, ul, ms, cid in zip(cmds["action"], cmds["reward_ul"], cmds["open_ms"],
                                                                 cmds["command_id"], strict=True)}
    assert manual["reward"][0] == 2.0 and manual["flush"][1] == 150.0
    ack = {int(c): (bool(ok), float(ms), e.decode()) for c, ok, ms, e in zip(acks["command_id"], acks["ok"],
                                                                           acks["open_ms"], acks["error"], strict=True)}
    flush_ok, flush_ms, flush_error = ack[int(manual["flush"][2])]
    assert (flush_ok and flush_ms == 150.0) or "INTERVAL" in flush_error  # the firmware's minimum interval
    counters = node_counters(result.path)["console"]
    assert counters["answers_ok"] == 7 and counters["answers_refused"] == 1  # the stop's answer included


def test_the_valve_node_opens_the_valve_for_a_flush() -> None:
    import contextlib

    from bcirig.config import load_rig
    from bcirig.devices import open_valve
    from bcirig.messages import Action, Command
    from bcirig.nodes.valve import ValveNode

    node = ValveNode.__new__(ValveNode)  # only its command handling, on the rig's simulated controller
    with contextlib.ExitStack() as stack:
        node.device = stack.enter_context(open_valve(load_rig(RIG).valve))
        ack = node._flush(Command(frame=5, command_id=9, action=Action.FLUSH, open_ms=150.0,
                                  t_ns={"task_out": 1}))
        clamped = node._flush(Command(frame=6, command_id=10, action=Action.FLUSH, open_ms=5000.0))
    assert ack.ok and ack.open_ms == 150.0 and ack.command_id == 9 and ack.t_ns["valve_ack"] >= ack.t_ns["valve_sent"]
    assert clamped.open_ms == 500.0 or not clamped.ok  # the rig's max_open_ms (or refused: too soon after)


def decisions(path: Path) -> dict[str, np.ndarray]:
    with SessionFile(path) as sf:
        fb, trials = sf.table("feedback"), sf.table("trials")
    keys = ("frame", "phase", "state", "trial", "screen", "angle_deg", "reward", "readout_norm", "threshold")
    return {**{f"feedback.{k}": fb[k] for k in keys}, **{f"trials.{k}": v for k, v in trials.items()}}


def test_a_killed_or_slow_console_changes_nothing_in_the_loop_or_the_file(tmp_path: Path) -> None:
    protocol = long_protocol(tmp_path)
    plain = run(tmp_path / "plain", protocol)
    killed = run(tmp_path / "killed", protocol, console=True,
                 node_options={"console": {"node_class": f"{OPS}:KilledConsole", "kill_at_frame": 200}})
    slow = run(tmp_path / "slow", protocol, console=True,
               node_options={"console": {"node_class": f"{OPS}:SlowConsole", "draw_s": 0.4}})
    for r in (plain, killed, slow):
        assert r.ok and r.outcome == "completed", r.error
    want = decisions(plain.path)
    for r in (killed, slow):
        got = decisions(r.path)
        assert got.keys() == want.keys()
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{r.path}: {k}")
    assert (killed.path.parent / "console.log").is_file()
    assert "console" not in node_counters(killed.path)  # it died: no final counters, and the file closed anyway
    seen = node_counters(slow.path)["console"]
    assert seen["refreshes"] >= 1 and seen["link_images"] >= 1 and seen["link_gaps"] == 0


def detect_protocol(tmp_path: Path) -> Path:
    p = tmp_path / "detect.toml"
    p.write_text(PROTOCOL.read_text().replace('rois = "truth"', 'rois = "detect"\nframes = 120'))
    return p


def test_rois_picked_in_the_set_up_window_are_the_sessions_rois(tmp_path: Path) -> None:
    protocol = detect_protocol(tmp_path)
    result = run(tmp_path, protocol, setup_console=True,
                 node_options={"setup_window": {"window_class": f"{OPS}:PickingOperator"}})
    assert result.ok, result.error
    with SessionFile(result.path) as sf:
        report = json.loads(sf.f["setup"].attrs["report"])
        rois = sf.rois()
        setup_frames = sf.f["setup"]["frames"][()]
    assert report["method"] == "console" and report["operator"] == "console" and report["picked"] == [0, 1, 2, 3, 4, 5]
    from bcirig.config import RoiMethod, load_protocol
    from bcirig.processing.rois import RoiSet

    # the same detection on the recorded set-up frames: the session's ROIs are the clicked candidates' pixels
    phase = SetupPhase(load_protocol(protocol), RoiChoice(method=RoiMethod.DETECT))
    for f in setup_frames:
        phase.add(f)
    cands = phase.candidates()
    got = RoiSet.from_arrays(rois)
    assert got.names == ["P+0", "P-0", "P+1", "P-1", "P+2", "P-2"]
    for roi, k in zip(got, [0, 1, 2, 3, 4, 5], strict=True):
        assert sorted(zip(roi.y.tolist(), roi.x.tolist(), strict=True)) == sorted(
            zip(cands[k].roi.y.tolist(), cands[k].roi.x.tolist(), strict=True))


def test_a_rejected_set_up_stops_before_anything_is_recorded(tmp_path: Path) -> None:
    protocol = detect_protocol(tmp_path)
    with pytest.raises(SetupError, match=r"set-up rejected: the operator rejected the set-up; nothing was recorded"):
        run(tmp_path, protocol, setup_console=True,
            node_options={"setup_window": {"window_class": f"{OPS}:RejectingOperator"}})
    assert not list(tmp_path.glob("sim/*/session.h5"))


def test_a_console_attached_from_the_session_folder_follows_and_steers_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import threading

    import zmq

    from bcirig.control_plane import Answer, encode_request

    sup = Supervisor(PROTOCOL, RIG, data_dir=tmp_path, mode="realtime")
    out: dict[str, SessionResult] = {}
    runner = threading.Thread(target=lambda: out.update(r=sup.run()), daemon=True)
    runner.start()
    assert sup.started.wait(120)
    info = json.loads((sup.session_dir / "endpoints.json").read_text())
    assert set(info["nodes"]) >= {"pipeline", "task", "valve", "recorder", "supervisor"}
    attached = subprocess.Popen([sys.executable, "-m", "bcirig.cli", "console", str(sup.session_dir.parent)],
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IDENTITY, b"tester")
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(info["control"])
    answers = []
    for command in ("pause", "resume"):
        dealer.send_multipart(encode_request(command))
        assert dealer.poll(10_000)
        answers.append(Answer.decode(dealer.recv_multipart()))
    dealer.send_multipart(encode_request("dance"))
    assert dealer.poll(10_000)
    unknown = Answer.decode(dealer.recv_multipart())
    ctx.destroy(linger=0)
    runner.join(timeout=120)
    _, err = attached.communicate(timeout=60)
    result = out["r"]
    assert result.ok, result.error
    assert [(a.ok, a.command_id, a.command) for a in answers] == [(True, 1, "pause"), (True, 2, "resume")]
    assert not unknown.ok and "unknown command 'dance'" in unknown.text
    with SessionFile(result.path) as sf:
        op = sf.table("operator")
    assert [c.decode() for c in op["command"]] == ["pause", "resume"] and op["source"].tolist() == [b"tester"] * 2
    assert not (result.path.parent / "endpoints.json").exists()  # only while the session runs
    assert attached.returncode == 0, err
    assert "console attached to" in err and "the session ended" in err


def test_day_two_in_the_set_up_window_confirms_the_alignment_or_stops(tmp_path: Path) -> None:
    import tempfile

    from bcirig.processing.rois import RoiSet

    protocol = detect_protocol(tmp_path)
    day1 = run(tmp_path, protocol, subject="M1")  # the simulated operator chooses day 1's groups
    assert day1.ok and day1.outcome == "completed", day1.error
    with pytest.raises(SetupError, match=r"set-up rejected: the operator rejected the field-of-view alignment"):
        run(tmp_path, protocol, subject="M1", setup_console=True,
            node_options={"setup_window": {"window_class": f"{OPS}:MisalignedOperator"}})
    before = set(Path(tempfile.gettempdir()).glob("bcirig-setup-*.refused"))
    day2 = run(tmp_path, protocol, subject="M1", setup_console=True,
               node_options={"setup_window": {"window_class": f"{OPS}:AligningOperator"}})
    assert day2.ok, day2.error
    refused = set(Path(tempfile.gettempdir()).glob("bcirig-setup-*.refused")) - before
    assert len(refused) == 1
    note = refused.pop()
    assert "confirm (or reject) the field-of-view alignment first" in note.read_text()
    note.unlink()
    with SessionFile(day1.path) as a, SessionFile(day2.path) as b:
        rois1, rois2 = RoiSet.from_arrays(a.rois()), RoiSet.from_arrays(b.rois())
        report = json.loads(b.f["setup"].attrs["report"])
    assert report["operator"] == "console" and report["alignment_confirmed"] is True
    assert report["proposal"] == "previous" and report["previous_day"] == 1
    dy, dx = report["fov_offset_px"]
    assert rois2.names == rois1.names  # the same neurons, found again
    for r1, r2 in zip(rois1, rois2, strict=True):  # ... moved by the field's offset (masks: to whole pixels)
        assert r2.centroid_yx == pytest.approx((r1.centroid_yx[0] + round(dy), r1.centroid_yx[1] + round(dx)), abs=1e-6)
