"""The session file: readable while written (SWMR), intact after the writer is killed, complete when closed."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bcirig.messages import Event, EventKind, Feedback, Frame, Phase, Readout, Screen
from bcirig.processing import Roi, RoiSet
from bcirig.recording import SessionFile, SessionFileError, SessionWriter
from tests.conftest import ROOT


def start_writer(path: Path, frames: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "recording" / "writer_proc.py"), str(path),
                             str(frames)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)


def test_reader_sees_rows_while_the_writer_runs_then_writer_killed_loses_nothing_flushed(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    proc = start_writer(path, 1000)
    assert proc.stdin is not None and proc.stdout is not None  # both piped
    try:
        assert proc.stdout.readline().strip() == "flushed 50"
        with SessionFile(path) as sf:  # opened while the writer holds the file
            assert len(sf.table("readout")["frame"]) == 50
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "flushed 100"
            sf.refresh()
            ro = sf.table("readout")
            assert ro["frame"].tolist() == list(range(100))
            assert sf.frames().shape == (100, 1, 32, 32)
        proc.send_signal(signal.SIGKILL)  # mid-session crash, right after the second flush
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    with SessionFile(path) as sf:
        ro = sf.table("readout")
        assert ro["frame"].tolist() == list(range(100))
        np.testing.assert_array_equal(ro["F"][:, 0], np.arange(100, dtype=np.float32))
        assert int(sf.frames()[99].max()) == 99
        assert not sf.attrs["complete"]


def test_closed_file_holds_tables_attributes_and_roundtrips_rois(tmp_path: Path) -> None:
    rois = RoiSet([Roi.disk("P+0", 0, (10, 10), 3, group="P+"), Roi.disk("P-0", 0, (30, 30), 3, group="P-")])
    w = SessionWriter(tmp_path / "s.h5", protocol_text="PROTO", rig_text="RIG", rois=rois.to_arrays(), n_rois=2,
                      reference=np.ones((1, 40, 40), np.float32), frame_shape=(1, 40, 40), frame_dtype="uint16",
                      record_frames=False, truth_fields={"shift": ((2,), "f4")})
    w.write(Frame(frame=0, data=np.zeros((1, 40, 40), np.uint16), truth={"shift": [1.5, -2.0]}))
    w.write(Readout(frame=0, readout=0.25, t_ns={"arrive": 10, "published": 30}))
    w.write(Feedback(frame=0, phase=Phase.BASELINE, screen=Screen.GREY))
    w.write(Event(frame=0, name=EventKind.CALIBRATION, data={"threshold": 0.3, "window_starts": [1, 2],
                                                            "window_maxima": [0.1, 0.4]}))
    w.write(Event(frame=5, name=EventKind.TRIAL_END, trial=1, data={"outcome": "hit", "start_frame": 1, "frames": 5}))
    w.write(Event(frame=6, name=EventKind.SESSION_END, data={}))  # ran to its end: complete
    w.close(summary={"hits": 1})
    with SessionFile(tmp_path / "s.h5") as sf:
        a = sf.attrs
        assert a["protocol"] == "PROTO" and a["rig"] == "RIG" and a["complete"] and a["format"] == "bcirig-session"
        assert sf.summary == {"hits": 1}
        assert not sf.has_frames
        assert sf.table("truth")["shift"].tolist() == [[1.5, -2.0]]
        assert sf.table("readout")["t_ns"][0, 1] == 10  # "arrive" column
        cal = sf.table("calibration_windows")
        assert cal["start"].tolist() == [1, 2] and cal["maximum"].tolist() == [0.1, 0.4]
        ev = sf.events()
        assert ev[0]["data"] == {"threshold": 0.3}  # window arrays went to their own table
        tr = sf.table("trials")
        assert tr["outcome"].tolist() == [b"hit"] and tr["outcome_frame"].tolist() == [5]
        back = RoiSet.from_arrays(sf.rois())
        assert back.names == ["P+0", "P-0"] and back.groups == ["P+", "P-"]
        assert json.loads(json.dumps(sf.summary)) == {"hits": 1}


def test_the_summary_is_computed_from_the_closed_file_by_its_writer(tmp_path: Path) -> None:
    # the recorder (and the simulation) pass bcirig.summary.session_summary: the file's own numbers
    rois = RoiSet([Roi.disk("P+0", 0, (4, 4), 2, group="P+")])
    w = SessionWriter(tmp_path / "s.h5", protocol_text="P", rig_text="R", rois=rois.to_arrays(), n_rois=1,
                      reference=np.ones((1, 8, 8), np.float32), frame_shape=(1, 8, 8), frame_dtype="uint16",
                      record_frames=False)
    for k in range(3):
        w.write(Readout(frame=k, readout=0.1 * k, F=np.ones(1, np.float32), neuropil=np.ones(1, np.float32),
                        F0=np.ones(1, np.float32), dff=np.zeros(1, np.float32)))
    w.close(summary={"note": "kept"}, summarize=lambda sf: {"readouts": len(sf.table("readout")["frame"]),
                                                            "complete": "recounted after closing"})
    with SessionFile(tmp_path / "s.h5") as sf:  # complete is the attribute's value: no session_end was written
        assert sf.summary == {"readouts": 3, "complete": False, "note": "kept"}
        assert not sf.attrs["complete"] and sf.attrs["closed_cleanly"]


def test_not_a_session_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(SessionFileError, match="cannot open as HDF5"):
        SessionFile(tmp_path / "x.h5")
    with pytest.raises(SessionFileError, match="no such session file"):
        SessionFile(tmp_path / "missing.h5")


def test_the_trial_table_keeps_each_trials_reward_frame_from_its_trial_end_event(tmp_path: Path) -> None:
    rois = RoiSet([Roi.disk("P+0", 0, (4, 4), 2, group="P+")])
    w = SessionWriter(tmp_path / "s.h5", protocol_text="P", rig_text="R", rois=rois.to_arrays(), n_rois=1,
                      reference=np.ones((1, 8, 8), np.float32), frame_shape=(1, 8, 8), frame_dtype="uint16",
                      record_frames=False)
    w.write(Event(frame=20, name=EventKind.TRIAL_END, trial=1,
                  data={"outcome": "hit", "start_frame": 10, "frames": 11, "reward_frame": 22}))
    w.write(Event(frame=70, name=EventKind.TRIAL_END, trial=2,
                  data={"outcome": "timeout", "start_frame": 31, "frames": 40, "reward_frame": -1}))
    w.write(Event(frame=90, name=EventKind.TRIAL_END, trial=3,  # from a task before the column existed
                  data={"outcome": "hit", "start_frame": 80, "frames": 11}))
    w.close()
    with SessionFile(tmp_path / "s.h5") as sf:
        tr = sf.table("trials")
        assert tr["outcome_frame"].tolist() == [20, 70, 90]
        assert tr["reward_frame"].tolist() == [22, -1, -1]
        assert tr["reward_frame"].dtype == np.int64
