"""The real multi-process session: supervisor, five node processes, ZeroMQ, HDF5; then replay.

These run in lockstep mode (deterministic, as fast as the machine allows) on a short protocol.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bcirig.acquisition.simulated import make_mouse
from bcirig.compose import run_inline
from bcirig.config import load_protocol, load_rig
from bcirig.control import Task
from bcirig.messages import Readout
from bcirig.processing import Pipeline, RoiSet
from bcirig.recording import SessionFile
from bcirig.replay import replay
from bcirig.setup import prepare_setup
from bcirig.supervisor import SessionResult, Supervisor
from tests.conftest import ROOT
from tests.faults import crash

PROTOCOL = ROOT / "tests" / "configs" / "e2e.toml"
RIG = ROOT / "hardware" / "rigs" / "sim.toml"

pytestmark = pytest.mark.slow


def run_session(tmp_path: Path, **kw: Any) -> SessionResult:
    return Supervisor(PROTOCOL, RIG, data_dir=tmp_path, mode="lockstep", **kw).run()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> SessionResult:
    result = run_session(tmp_path_factory.mktemp("e2e"))
    assert result.ok, result.error
    return result


def test_session_file_holds_every_frame_readout_and_decision(session: SessionResult) -> None:
    s = session.summary
    assert s["complete"] and s["trials"] == 4 and s["dropped_messages"] == 0 and s["bad_frames"] == 0
    assert s["frames_published"] == s["frames_processed"] == s["frames_decided"]  # none after the last verdict
    with SessionFile(session.path) as sf:
        ro, fb = sf.table("readout"), sf.table("feedback")
        n = s["frames_published"]
        assert sf.frames().shape == (n, 1, 96, 96)
        assert ro["frame"].tolist() == list(range(n)) == fb["frame"].tolist()
        assert ro["F"].shape == (n, 6) and np.isfinite(ro["F"]).all()
        # baseline then closed loop, phases in order
        phases = [p.decode() for p in fb["phase"]]
        assert phases[:300] == ["baseline"] * 300 and phases[300] == "closed_loop"
        # 200 calibration windows, and the threshold lets at most half of them reach it
        cal = sf.table("calibration_windows")
        calib = next(e for e in sf.events() if e["name"] == "calibration")["data"]
        assert len(cal["maximum"]) == 200
        assert np.mean(cal["maximum"] >= calib["threshold"]) <= 0.5
        # the recorded readout is the baseline-min-referenced value the task used
        closed = fb["phase"] == b"closed_loop"
        np.testing.assert_allclose(fb["readout_norm"][closed], ro["readout"][closed] - calib["baseline_min"])
        # each hit's reward command is on the 3rd frame of its hold, and it was acknowledged
        trials = sf.table("trials")
        hits = trials["outcome_frame"][trials["outcome"] == b"hit"]
        cmds = sf.table("commands")
        assert cmds["frame"].tolist() == (hits + 2).tolist()
        # the trial table names each hit's reward frame, outcome frame + (reward_on_hold_frame - 1), and
        # -1 for the other trials; the reward commands went out on exactly those frames
        is_hit = trials["outcome"] == b"hit"
        assert is_hit.any() and (trials["reward_frame"][is_hit] == trials["outcome_frame"][is_hit] + 3 - 1).all()
        assert (trials["reward_frame"][~is_hit] == -1).all()
        assert cmds["frame"].tolist() == trials["reward_frame"][is_hit].tolist()
        acks = sf.table("acks")
        assert acks["command_id"].tolist() == cmds["command_id"].tolist()
        # motion correction against the simulator's ground truth (integer-pixel brain motion). Both use one
        # convention: the simulator renders frame(y, x) = field(y - dy, x - dx) for truth (dy, dx)
        # (sim/optics.py), and registration reports content moved by +d as +d (registration.py), so on
        # every axis of every frame where the brain was displaced the two have the same sign
        truth = sf.table("truth")["shift"]
        moved = truth != 0
        assert moved.sum() >= 20 and np.abs(truth).max() >= 2  # the brain did move, often
        assert np.mean(np.sign(ro["shift"][moved]) == np.sign(truth[moved])) > 0.95
        assert np.median(np.abs(ro["shift"][moved] - truth[moved])) < 0.5
        # per-stage stamps present on every frame, in causal order
        t = ro["t_ns"]
        assert (np.diff(t, axis=1) >= 0).all()
        assert json.loads(sf.attrs["summary"])["trials"] == 4
        assert sf.attrs["protocol"] == PROTOCOL.read_text()


def test_replay_of_the_recorded_session_is_identical(session: SessionResult) -> None:
    rep = replay(session.path)
    assert rep.identical, rep.text()
    assert rep.readouts_compared == session.summary["frames_processed"]
    assert rep.trials_replayed == 4


def test_inline_composition_makes_the_same_decisions_as_the_processes(session: SessionResult,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    protocol = load_protocol(PROTOCOL)
    rig = load_rig(RIG)
    mouse = make_mouse(protocol, rig)
    rois = mouse.rois()
    pipeline = Pipeline(protocol, rois, mouse.reference_image())
    task = Task(protocol)
    readouts = []
    pipeline_process = pipeline.process

    def spy(frame: np.ndarray, index: int) -> Readout:
        r = pipeline_process(frame, index)
        readouts.append(r.readout)
        return r

    monkeypatch.setattr(pipeline, "process", spy)
    summary = run_inline(mouse, pipeline, task)
    with SessionFile(session.path) as sf:
        live = sf.table("readout")["readout"]
        trials = sf.table("trials")
    n = min(len(live), len(readouts))
    assert n >= summary["frames"] - 1
    np.testing.assert_array_equal(np.asarray(readouts[:n]), live[:n])
    assert [t.outcome for t in task.trials] == [o.decode() for o in trials["outcome"]]
    assert RoiSet.from_arrays(rois.to_arrays()).names == rois.names


def test_frames_of_the_wrong_shape_are_counted_and_never_reach_the_pipeline(tmp_path: Path) -> None:
    rig = tmp_path / "rig.toml"
    custom = ('kind = "custom"\nseed = 1\n[source.custom]\nclass_path = "tests.sources:WrongShapeSource"\n'
              'options = { bad_at = [50, 51, 400] }')
    rig.write_text(RIG.read_text().replace('kind = "simulated"\nseed = 1', custom))
    assert "tests.sources:WrongShapeSource" in rig.read_text()
    # a custom source has no set-up of its own: the simulated rig's (the same mouse) is given
    setup = prepare_setup(load_protocol(PROTOCOL), load_rig(RIG))
    result = Supervisor(PROTOCOL, rig, data_dir=tmp_path, mode="lockstep", setup=setup).run()
    assert result.ok, result.error
    assert result.summary["malformed_frames"] == 3 and result.summary["dropped_frames"] == 0
    assert result.summary["bad_frames"] == 0  # the pipeline never saw them
    with SessionFile(result.path) as sf:
        acq = sf.table("acquisition")
        ro = sf.table("readout")
        assert ro["valid"].all() and ro["frame"].tolist() == list(range(len(ro["frame"])))
        # the rejected volumes are counted on the next frame that reached the pipeline, in order
        assert acq["malformed"].sum() == 3
        assert np.flatnonzero(acq["malformed"]).tolist() == [50, 398]
        assert acq["malformed"][50] == 2 and acq["malformed"][398] == 1
        # the microscope's own index skips the rejected images: session frame 50 is its image 52
        assert acq["acq_index"][:3].tolist() == [0, 1, 2]
        assert acq["acq_index"][50] == 52 and acq["acq_index"][397] == 399 and acq["acq_index"][398] == 401


def test_a_dying_node_puts_the_task_in_safe_state_and_names_the_node(tmp_path: Path) -> None:
    result = run_session(tmp_path, node_options=crash("pipeline", 350))
    assert not result.ok
    assert result.summary["frames_published"] == 350  # from the file when the node could not say (was -1)
    assert "node 'pipeline' died (exit code 1): RuntimeError: injected failure at frame 350" in result.error
    with SessionFile(result.path) as sf:
        # the recorder drained and closed the file; it did not run to its end, and says why
        assert sf.attrs["closed_cleanly"] and not sf.attrs["complete"] and sf.attrs["outcome"] == "failed"
        assert "node 'pipeline' died" in sf.attrs["reason"]
        ro = sf.table("readout")
        assert ro["frame"].tolist() == list(range(350))
        events = sf.events()
        assert any(e["name"] == "safe_state" for e in events)
        safe_frame = next(e["frame"] for e in events if e["name"] == "safe_state")
        assert all(f <= safe_frame for f in sf.table("commands")["frame"])
        assert sf.table("feedback")["screen"][-1] == b"grey"


def test_recorder_killed_leaves_a_readable_file_up_to_its_last_flush(tmp_path: Path) -> None:
    result = run_session(tmp_path, node_options=crash("recorder", 320, "kill"))
    assert not result.ok and "node 'recorder' died (killed by signal SIGKILL)" in result.error
    with SessionFile(result.path) as sf:
        assert not sf.attrs["complete"]
        frames = sf.table("readout")["frame"]
        assert 0 < len(frames) <= 320
        assert frames.tolist() == list(range(len(frames)))  # a clean prefix, nothing torn
        assert sf.frames().shape[0] >= len(frames) - 1


def test_day_two_carries_the_calibration_and_difficulty_never_drops(session: SessionResult) -> None:
    data_dir = session.path.parents[2]
    history = json.loads((data_dir / "sim" / "subject.json").read_text())
    assert [s["outcome"] for s in history["sessions"]][-1] == "completed"
    day1_z = history["sessions"][-1]["carry_forward"]["threshold_z"]
    result = Supervisor(PROTOCOL, RIG, data_dir=data_dir, mode="lockstep").run()
    assert result.ok, result.error
    assert result.path.parent.name.endswith("_2")  # second session of the day for this subject
    with SessionFile(result.path) as sf:
        calib = next(e for e in sf.events() if e["name"] == "calibration")["data"]
        assert json.loads(sf.attrs["carried"])["threshold_z"] == day1_z
    assert calib["carried_z"] == day1_z
    assert calib["threshold_z"] >= day1_z - 1e-9
    assert calib["threshold"] >= calib["threshold_today"]


def test_session_with_the_qt_display_node_shows_every_feedback_frame(tmp_path: Path) -> None:
    rig = ROOT / "tests" / "configs" / "rig-qt.toml"
    result = Supervisor(PROTOCOL, rig, data_dir=tmp_path, mode="lockstep",
                        node_options={"display": {"size": [160, 120]}}).run()
    assert result.ok, result.error
    with SessionFile(result.path) as sf:
        nodes = {n.decode(): json.loads(c) for n, c in zip(sf.table("nodes")["node"], sf.table("nodes")["counters"],
                                                           strict=True)}
        fb = sf.table("feedback")
    display = nodes["display"]
    assert display["feedback_shown"] == len(fb["frame"])
    assert display["grating_frames"] == int((fb["screen"] == b"grating").sum()) > 0
    assert display["repaints"] > 0 and display["gaps"] == 0


def test_a_hung_pipeline_stops_the_rewards_and_is_killed(tmp_path: Path) -> None:
    result = run_session(tmp_path, node_options=crash("pipeline", 350, "hang"))
    assert not result.ok
    # the task notices first: frames stopped for longer than safety.frame_timeout_ms
    assert "task went safe: no frame for 1000 ms after frame 349" in result.error
    with SessionFile(result.path) as sf:
        assert sf.attrs["closed_cleanly"] and not sf.attrs["complete"] and sf.attrs["outcome"] == "failed"
        assert sf.table("readout")["frame"].tolist() == list(range(350))
        assert sf.table("feedback")["screen"][-1] == b"grey"


def test_simulated_licks_reach_the_valve_controllers_sensor_and_come_back_with_device_times(
        session: SessionResult) -> None:
    with SessionFile(session.path) as sf:
        events = sf.events()
    contacts = sum(e["data"]["count"] for e in events if e["name"] == "lick_contact")
    licks = [e for e in events if e["name"] == "lick"]
    assert contacts > 0  # the simulated mouse licks (more after rewards)
    assert len(licks) == contacts  # the twin's debounce (3 ms) passes every 40 ms contact
    device_ms = [e["data"]["device_ms"] for e in licks]
    assert device_ms == sorted(device_ms) and all(e["data"]["host_ns"] > 0 for e in licks)


@pytest.mark.firmware
def test_session_through_the_emulated_firmware_rewards_and_reports_licks(tmp_path: Path) -> None:
    from bcirig.devices.emulator import ValveEmulator

    try:
        ValveEmulator().close()
    except Exception as exc:  # pragma: no cover - only where avr-gcc/simavr are missing
        pytest.skip(f"valve firmware emulator unavailable: {exc}")
    result = Supervisor(PROTOCOL, ROOT / "hardware" / "rigs" / "sim-emulated.toml", data_dir=tmp_path,
                        mode="lockstep").run()
    assert result.ok, result.error
    with SessionFile(result.path) as sf:
        cmds, acks = sf.table("commands"), sf.table("acks")
        events = sf.events()
    assert acks["command_id"].tolist() == cmds["command_id"].tolist()  # every command acknowledged
    ok = acks["ok"]
    assert ok.any() and np.all(acks["open_ms"][ok] == 100.0)  # 4 uL x 25 ms/uL, applied by the firmware
    assert all(b"INTERVAL" in e for e in acks["error"][~ok])  # refusals only from the firmware's min interval
    contacts = sum(e["data"]["count"] for e in events if e["name"] == "lick_contact")
    licks = [e for e in events if e["name"] == "lick"]
    assert 0 < len(licks) <= contacts  # contacts closer than 40 ms merge on the real (debounced) pin


def test_console_node_follows_the_session(tmp_path: Path) -> None:
    shot = tmp_path / "console.png"
    result = Supervisor(PROTOCOL, RIG, data_dir=tmp_path, mode="lockstep", console=True,
                        node_options={"console": {"screenshot": str(shot)}}).run()
    assert result.ok, result.error
    with SessionFile(result.path) as sf:
        nodes = {n.decode(): json.loads(c) for n, c in zip(sf.table("nodes")["node"], sf.table("nodes")["counters"],
                                                           strict=True)}
    assert nodes["console"]["trials_seen"] == 4 == result.summary["trials"]
    assert nodes["console"]["hits_seen"] == result.summary["hits"]
    assert nodes["console"]["dropped_frames_seen"] == 0 == result.summary["dropped_frames"]  # heard the source
    assert shot.stat().st_size > 10_000


def test_a_full_disk_stops_the_session_and_keeps_what_was_flushed(tmp_path: Path) -> None:
    # 8 MB: the whole session's tables fit whatever the machine's speed (about 1 MB), its frames (22 MB) do not
    opts = {"recorder": {"node_class": "tests.faults:FullDiskRecorder", "limit_bytes": 8_000_000}}
    result = run_session(tmp_path, node_options=opts)
    assert not result.ok
    assert "node 'recorder' died (exit code 1): " in result.error
    assert "DiskFullError" in result.error and "no room to record" in result.error
    assert "SIGSEGV" not in result.error
    with SessionFile(result.path) as sf:  # what was flushed before is all there, in order
        frames = sf.table("readout")["frame"]
        assert len(frames) > 0 and frames.tolist() == list(range(len(frames)))
        assert sf.attrs["closed_cleanly"] and not sf.attrs["complete"]
        assert sf.frames().shape[0] < len(frames)  # raw frames were given up before any decision
    assert result.path.stat().st_size <= 8_000_000


def test_an_unwritable_data_directory_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    from bcirig.supervisor import SessionError

    with pytest.raises(SessionError, match=r"cannot write to the data directory .*--data-dir"):
        run_session(blocker / "data")


def test_a_valve_node_that_fails_at_start_up_is_reported_with_its_error(tmp_path: Path) -> None:
    rig = tmp_path / "rig.toml"
    rig.write_text(RIG.read_text().replace('kind = "simulated"\nms_per_ul', 'kind = "serial"\nport = '
                                                                             '"/dev/bcirig-no-such-port"\nms_per_ul'))
    assert "bcirig-no-such-port" in rig.read_text()
    result = Supervisor(PROTOCOL, rig, data_dir=tmp_path, mode="lockstep").run()
    assert not result.ok
    assert "node 'valve' died (exit code 1)" in result.error
    assert "cannot open valve controller port '/dev/bcirig-no-such-port'" in result.error  # not 'no error message'
