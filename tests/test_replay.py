"""Replay: identity over every column a decision used, a safe-state stop, truncated files, what-if replay.

The sessions are real: supervisor, node processes, lockstep, on the end-to-end protocol.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from bcirig.cli import main
from bcirig.config import parse_protocol
from bcirig.recording import SessionFile
from bcirig.replay import apply_changes, replay, toml_text, what_if
from bcirig.schema import ConfigError
from bcirig.supervisor import Supervisor
from tests.conftest import ROOT
from tests.faults import crash

PROTOCOL = ROOT / "tests" / "configs" / "e2e.toml"
RIG = ROOT / "hardware" / "rigs" / "sim.toml"
GREY_FRAMES, RATE_HZ = 15, 30.0  # of e2e.toml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = Supervisor(PROTOCOL, RIG, data_dir=tmp_path_factory.mktemp("replay"), mode="lockstep").run()
    assert result.ok, result.error
    return result.path


@pytest.fixture(scope="module")
def safe_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session that ended in the safe state: the pipeline node dies at frame 350."""
    result = Supervisor(PROTOCOL, RIG, data_dir=tmp_path_factory.mktemp("safe"), mode="lockstep",
                        node_options=crash("pipeline", 350)).run()
    assert not result.ok
    return result.path


def _copy(session: Path, tmp_path: Path) -> Path:
    path = tmp_path / "session.h5"
    shutil.copy(session, path)
    return path


# ------------------------------------------------------------------------------------------- identity
def test_an_unchanged_session_replays_identical_on_every_column(session: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    rep = replay(session)
    assert rep.identical, rep.text()
    with SessionFile(session) as sf:
        n = len(sf.table("readout")["frame"])
        assert rep.commands_recorded == len(sf.table("commands")["frame"]) > 0
    assert rep.readouts_compared == n and rep.decisions_compared == n
    compared = set(rep.column_mismatches)
    for col in ("valid", "shift", "corr", "F", "neuropil", "F0", "dff", "readout_raw", "readout"):
        assert f"readout.{col}" in compared
    for col in ("phase", "state", "trial", "trial_frame", "screen", "angle_deg", "sound", "tone_hz", "reward",
                "opto", "readout_norm", "threshold"):
        assert f"feedback.{col}" in compared
    assert not any(rep.column_mismatches.values())
    assert main(["replay", str(session)]) == 0
    assert "IDENTICAL" in capsys.readouterr().out


@pytest.mark.parametrize("table,column", [
    ("readout", "readout_raw"), ("readout", "F"), ("readout", "neuropil"), ("readout", "F0"), ("readout", "dff"),
    ("readout", "shift"), ("readout", "readout"), ("feedback", "tone_hz"), ("feedback", "trial_frame"),
])
def test_a_column_changed_at_one_frame_replays_different_and_is_named(session: Path, tmp_path: Path, table: str,
                                                                      column: str) -> None:
    path = _copy(session, tmp_path)
    with h5py.File(path, "r+") as f:
        ds = f[table][column]
        row = 400
        value = np.array(ds[row])
        if ds.dtype.kind == "f":  # the smallest change a float can have: one unit in the last place
            first = value.flat[0]  # NaN (a grating frame's tone) becomes a number
            value.flat[0] = np.nextafter(first, ds.dtype.type(np.inf)) if np.isfinite(first) else 0.0
        else:
            value += 1
        ds[row] = value
    rep = replay(path)
    assert not rep.identical
    assert rep.column_mismatches[f"{table}.{column}"] == 1
    assert sum(rep.column_mismatches.values()) == 1  # nothing else is blamed
    assert f"{table}.{column} at frame 400" in rep.first_mismatch
    assert f"{table}.{column} (1 rows)" in rep.text()


def test_the_trial_tables_reward_frame_is_compared_and_files_without_it_still_replay(session: Path,
                                                                                     tmp_path: Path) -> None:
    rep = replay(session)
    assert rep.column_mismatches.get("trials.reward_frame") == 0 and rep.trial_table_identical
    with SessionFile(session) as sf:
        tr = sf.table("trials")
        hit = int(np.flatnonzero(tr["outcome"] == b"hit")[0])
    for name in ("changed", "v1", "v2"):
        (tmp_path / name).mkdir()
    changed = _copy(session, tmp_path / "changed")
    with h5py.File(changed, "r+") as f:
        f["trials"]["reward_frame"][hit] += 1
    rep = replay(changed)
    assert not rep.identical and rep.column_mismatches["trials.reward_frame"] == 1
    # a version 1 file (no acquisition table) and a version 2 file from before the column: no reward_frame
    for version in (1, 2):
        old = _copy(session, tmp_path / f"v{version}")
        with h5py.File(old, "r+") as f:
            del f["trials"]["reward_frame"]
            if version == 1:
                del f["acquisition"]
                f.attrs["version"] = 1
        rep = replay(old)
        assert rep.identical, rep.text()
        assert rep.trials_replayed == rep.trials_recorded == 4 and "trials.reward_frame" not in rep.column_mismatches


def test_a_session_that_ended_in_the_safe_state_replays_identical(safe_session: Path) -> None:
    with SessionFile(safe_session) as sf:
        fb = sf.table("feedback")
        safe_rows = np.flatnonzero(fb["phase"] == b"safe")
    # the recorded safe-state row reuses the last frame's number: two rows for frame 349
    assert fb["frame"][safe_rows].tolist() == [349] * len(safe_rows) and len(safe_rows) >= 1
    assert (fb["frame"] == 349).sum() == 1 + len(safe_rows)
    rep = replay(safe_session)
    assert rep.identical, rep.text()
    assert rep.safe_stop.startswith("frame 349: ") and rep.safe_stop_identical
    assert rep.readouts_compared == 350
    assert "ended in the safe state at frame 349" in rep.text()


def test_replay_of_a_truncated_file_fails_at_once_with_one_line(session: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.h5"
    data = session.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # a subprocess: before the fix the SWMR open never returned; the timeout only bounds a regression
    out = subprocess.run([sys.executable, "-m", "bcirig.cli", "replay", str(cut)], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == (f"bcirig: {cut}: truncated file: {len(data) // 2:,} bytes of the {len(data):,} its HDF5 "
                        "superblock records (an interrupted copy or a full disk?); copy the whole file again")


# ------------------------------------------------------------------------------------------- what-if
def _recorded(session: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with SessionFile(session) as sf:
        calib = next(e["data"] for e in sf.events() if e["name"] == "calibration")
        trials = sf.table("trials")
    return calib, trials


def test_a_fixed_threshold_equal_to_the_calibrated_one_decides_every_frame_as_recorded(session: Path) -> None:
    calib, trials = _recorded(session)
    rep = what_if(session, [f"calibration.fixed_threshold={calib['threshold']!r}"])
    assert rep.first_different_frame == -1 and rep.frames_decided_differently == 0
    assert [t.outcome for t in rep.what_if] == [o.decode() for o in trials["outcome"]]
    assert rep.totals["what_if"] == rep.totals["recorded"]


def test_an_unreachable_threshold_gives_no_hits_and_no_rewards(session: Path) -> None:
    calib, trials = _recorded(session)
    rep = what_if(session, ["calibration.fixed_threshold=1000.0"])
    assert rep.threshold_what_if == 1000.0 and rep.threshold_recorded == calib["threshold"]
    assert rep.achieved_what_if == 0.0  # no baseline window reaches it
    assert rep.totals["what_if"]["hits"] == 0 and rep.rewards_what_if == 0
    assert rep.totals["recorded"]["hits"] == int((trials["outcome"] == b"hit").sum()) > 0
    # the grating's angle is scaled to the threshold: decisions part on the first active frame of a trial
    # (one that was not aborted there), before the first recorded hit
    first_hit = int(trials["outcome_frame"][trials["outcome"] == b"hit"][0])
    assert rep.first_different_frame in {int(s) + GREY_FRAMES for s in trials["start_frame"]}
    assert rep.first_different_frame < first_hit
    text = rep.text()
    assert "the mouse would have seen other feedback" in text.replace("\n  ", " ")
    assert "hits 0" in text


def test_a_zero_threshold_ends_every_trial_on_its_first_active_frame(session: Path) -> None:
    rep = what_if(session, ["calibration.fixed_threshold=0"])
    done = [t for t in rep.what_if if t.outcome]
    assert len(done) >= 3
    # readout >= baseline minimum is a hit, below it an abort: decided on frame grey + 1 of every trial
    assert {t.frames for t in done} == {GREY_FRAMES + 1}
    hits = [t for t in done if t.outcome == "hit"]
    assert hits and all(t.time_to_hit_s(RATE_HZ) == pytest.approx(16 / 30) for t in hits)


def test_a_smoothing_change_changes_the_readout_and_the_report_names_the_old_value(session: Path) -> None:
    calib, trials = _recorded(session)
    rep = what_if(session, ["readout.smoothing.frames=9"])
    assert rep.changes == [("readout.smoothing.frames", 3, 9)]  # 3 is the default the recording ran with
    # the smoother's output is what the baseline windows are cut from: another threshold
    assert rep.threshold_recorded == calib["threshold"] and rep.threshold_what_if != calib["threshold"]
    # and no decision before the first closed-loop frame depends on the readout (baseline, grey start)
    assert rep.first_different_frame >= int(trials["start_frame"][0]) + GREY_FRAMES
    assert "readout.smoothing.frames: 3 -> 9" in rep.text()


@pytest.mark.parametrize("change,in_a_file,message", [
    ("readout.smoothing.frames=-3", "[readout.smoothing]\nframes = -3",
     "readout.smoothing.frames = -3: expected an integer in [1, 10000]"),
    ("calibration.threshold=0.3", "[calibration]\nthreshold = 0.3",
     "calibration.threshold = 0.3: expected no such key; known keys here: rule, windows, "
     "target_hit_fraction, target_hits_per_min, across_days, pool_days, fixed_threshold"),
    ("readout.f0.kind=mode", "[readout.f0]\nkind = 'mode'",
     "readout.f0.kind = 'mode': expected one of 'percentile', 'running_mean', 'kde_mode'"),
])
def test_what_if_keys_are_validated_with_the_protocol_files_one_line_errors(session: Path,
                                                                            capsys: pytest.CaptureFixture[str],
                                                                            change: str, in_a_file: str,
                                                                           message: str) -> None:
    with pytest.raises(ConfigError) as err:
        what_if(session, [change])
    assert str(err.value) == f"{session} (protocol with --set): {message}"
    with pytest.raises(ConfigError) as from_file:  # the very line a protocol file with that value gets
        parse_protocol(f"[protocol]\nname = 'x'\n{in_a_file}\n", "p.toml")
    assert str(from_file.value) == f"p.toml: {message}"
    assert main(["replay", str(session), "--set", change]) == 2
    assert capsys.readouterr().err.strip() == f"bcirig: {session} (protocol with --set): {message}"


def test_what_if_refuses_what_the_recording_fixed(session: Path) -> None:
    with pytest.raises(ConfigError, match=r"rois.groups.P\+ = 3: expected a key outside \[imaging\]"):
        what_if(session, ["rois.groups.P+=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        what_if(session, ["calibration.fixed_threshold"])


def test_the_what_if_command_reports_side_by_side_and_writes_json(session: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "what_if.json"
    assert main(["replay", str(session), "--set", "calibration.fixed_threshold=1000", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recorded: trials 4" in text and "what-if: trials" in text
    import json

    data = json.loads(out.read_text())
    assert data["totals"]["what_if"]["hits"] == 0 and data["threshold"]["what_if"] == 1000.0
    assert len(data["trials"]["recorded"]) == 4
    assert "mouse would have seen other feedback" in data["cannot_know"]
    assert parse_protocol(data["protocol"]).calibration.fixed_threshold == 1000.0


def test_the_changed_protocol_text_keeps_every_other_value() -> None:
    text = (ROOT / "protocols" / "francioni2026.toml").read_text()
    table = tomllib.loads(text)
    assert tomllib.loads(toml_text(table)) == table
    proto, new_text, done = apply_changes(text, ["calibration.fixed_threshold=0.25", "readout.decoder.plus=\"P-\""],
                                          "f.toml")
    assert proto.calibration.fixed_threshold == 0.25 and proto.readout.decoder["plus"] == "P-"
    changed = tomllib.loads(new_text)
    changed["calibration"].pop("fixed_threshold")
    changed["readout"]["decoder"]["plus"] = "P+"
    assert changed == table
    assert done == [("calibration.fixed_threshold", None, 0.25), ("readout.decoder.plus", "P+", "P-")]
