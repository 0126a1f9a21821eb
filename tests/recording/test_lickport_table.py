"""The session file's lickport record: the feedback's two lickport columns and the per-frame lickport table.

Written by the real writer, read through ``open_session`` (the integrity check, then the reader); a file
from before the table (no ``lickport`` group, no lickport feedback columns) reads as it did.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np

from bcirig.messages import Feedback, LickportPosition, Phase
from bcirig.processing import Roi, RoiSet
from bcirig.recording import SessionWriter
from bcirig.recording.integrity import open_session


def write(path: Path) -> None:
    rois = RoiSet([Roi.disk("P+0", 0, (10, 10), 3, group="P+")])
    w = SessionWriter(path, protocol_text="P", rig_text="R", rois=rois.to_arrays(), n_rois=1,
                      reference=np.ones((1, 40, 40), np.float32), frame_shape=(1, 40, 40), frame_dtype="uint16",
                      record_frames=False)
    for f, (mm, speed) in enumerate([(math.nan, math.nan), (0.0, 0.0), (0.05, 1.5), (0.1, 1.5)]):
        w.write(Feedback(frame=f, phase=Phase.CLOSED_LOOP, lickport_mm=mm, lickport_speed_mm_s=speed))
        w.write(LickportPosition(frame=f, commanded_mm=mm, speed_mm_s=speed, measured_mm=0.02 * f, moving=f > 1,
                                 t_ns={"device_ack": 1000 + f}))
    w.write(LickportPosition(frame=3, commanded_mm=0.0, speed_mm_s=-20.0, measured_mm=0.0, retracting=True,
                             t_ns={"device_ack": 2000}))
    w.close()


def test_the_lickport_is_recorded_per_frame_and_read_back(tmp_path: Path) -> None:
    write(tmp_path / "s.h5")
    with open_session(tmp_path / "s.h5") as sf:
        fb, lp = sf.table("feedback"), sf.lickport()
    np.testing.assert_array_equal(fb["lickport_mm"], [np.nan, 0.0, 0.05, 0.1])
    np.testing.assert_array_equal(fb["lickport_speed_mm_s"], [np.nan, 0.0, 1.5, 1.5])
    assert lp["frame"].tolist() == [0, 1, 2, 3, 3]
    np.testing.assert_array_equal(lp["commanded_mm"], [np.nan, 0.0, 0.05, 0.1, 0.0])
    assert lp["measured_mm"].tolist() == [0.0, 0.02, 0.04, 0.06, 0.0]
    assert lp["speed_mm_s"][-1] == -20.0 and lp["retracting"].tolist() == [False] * 4 + [True]
    assert lp["moving"].tolist() == [False, False, True, True, False]
    assert lp["t_ns"].tolist() == [1000, 1001, 1002, 1003, 2000]


def test_a_file_from_before_the_lickport_reads_as_before(tmp_path: Path) -> None:
    write(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "a") as f:  # what an older bcirig wrote: none of it
        del f["lickport"], f["feedback/lickport_mm"], f["feedback/lickport_speed_mm_s"]
    with open_session(tmp_path / "s.h5") as sf:
        fb, lp = sf.table("feedback"), sf.lickport()
    assert fb["frame"].tolist() == [0, 1, 2, 3] and "lickport_mm" not in fb
    assert set(lp) == {"frame", "commanded_mm", "speed_mm_s", "measured_mm", "moving", "retracting", "t_ns"}
    assert all(len(col) == 0 for col in lp.values())
