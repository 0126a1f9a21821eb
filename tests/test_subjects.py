"""A real mouse's day, on the simulated rig: subjects, the set-up phase, ROIs from the image or from files,
field-of-view alignment across days, and replay of a session whose ROIs were detected.

The simulated mouse's field moves from day to day by a known whole-pixel offset (simulation.fov_shift_px);
its ROIs are detected on its images like a real mouse's (the true footprints only score the detection).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import roifile

from bcirig.acquisition.assembler import FrameAssembler
from bcirig.acquisition.simulated import SimulatedSource, make_mouse
from bcirig.cli import main
from bcirig.config import load_rig, parse_protocol
from bcirig.processing import Roi
from bcirig.recording import SessionFile
from bcirig.replay import replay
from bcirig.setup import PreviousSetup, RoiChoice, Setup, SetupError, SetupPhase, parse_choose
from bcirig.subjects import Subject, SubjectError, session_folder
from tests.conftest import ROOT

RIG = ROOT / "hardware" / "rigs" / "sim.toml"
DEMO = (ROOT / "protocols" / "demo.toml").read_text()


def protocol_text(fov_shift_px: float = 12.0, setup: str = "") -> str:
    """The demo protocol, shorter (300-frame baseline, 4 trials), with a field that moves across days."""
    text = DEMO.replace("frames = 900", "frames = 300").replace("count = 12", "count = 4")
    text = text.replace('rule = "vectorized"', f'rule = "vectorized"\nfov_shift_px = {fov_shift_px}')
    return text + (f"\n[setup]\n{setup}\n" if setup else "")


# ------------------------------------------------------------------------------------------- subjects
def test_a_new_subject_is_day_one_and_only_completed_sessions_count(tmp_path: Path) -> None:
    s = Subject(tmp_path, "M12")
    assert s.day == 1 and s.previous() is None
    d1 = s.new_session_dir()
    (d1 / "setup.npz").write_bytes(b"")  # previous() needs the folder's set-up file
    s.record(d1, outcome="completed", setup={"method": "detect"}, carry_forward={"threshold_z": 1.2})
    d2 = s.new_session_dir()
    s.record(d2, outcome="failed", setup={}, carry_forward={"threshold_z": 9.0}, reason="valve died")
    again = Subject(tmp_path, "M12")  # read back from subject.json
    assert again.day == 2  # the failed session does not count as a training day
    prev = again.previous()
    assert prev is not None and prev.session_dir == d1 and prev.carry_forward == {"threshold_z": 1.2}
    assert [e["outcome"] for e in again.sessions] == ["completed", "failed"]
    assert again.sessions[1]["reason"] == "valve died" and again.sessions[1]["carry_forward"] == {}


def test_a_corrupt_history_says_how_to_go_on_and_is_never_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / "M3"
    folder.mkdir()
    (folder / "subject.json").write_text('{"sessions": [{"folder": ')  # cut off mid-write
    with pytest.raises(SubjectError) as err:
        Subject(tmp_path, "M3")
    msg = str(err.value)
    assert "subject.json" in msg and "--fresh" in msg and "--previous" in msg
    # the CLI says the same in one line, exit 2, and starts nothing
    assert main(["run", "demo", "--subject", "M3", "--data-dir", str(tmp_path), "--mode", "lockstep"]) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["subject.json"]
    # --fresh sets the unreadable history aside (kept) and starts at day 1
    s = Subject(tmp_path, "M3", fresh=True)
    assert s.day == 1 and s.set_aside_as is not None
    assert s.set_aside_as.read_text() == '{"sessions": [{"folder": '
    assert Subject(tmp_path, "M3").day == 1


def test_bad_subject_names_are_refused(tmp_path: Path) -> None:
    for name in ("", "../up", "a/b", " M1"):
        with pytest.raises(SubjectError, match="subject name"):
            Subject(tmp_path, name)


def _make_folders(base: str, n: int, out: mp.Queue[list[str]]) -> None:
    names = []
    for _ in range(n):
        names.append(session_folder(Path(base)).name)
    out.put(names)


def test_two_processes_making_session_folders_at_once_never_collide(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue[list[str]] = ctx.Queue()
    procs = [ctx.Process(target=_make_folders, args=(str(tmp_path), 30, out)) for _ in range(2)]
    for p in procs:
        p.start()
    names = out.get(timeout=60) + out.get(timeout=60)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(names) == len(set(names)) == 60  # every folder made once, none refused


# --------------------------------------------------------------------------------------- the set-up stage
def _setup_day(protocol_text_: str, day: int, previous: PreviousSetup | None) -> tuple[Setup, tuple[int, int]]:
    protocol = parse_protocol(protocol_text_, "t.toml")
    src = SimulatedSource(protocol, load_rig(RIG), day=day)
    asm = FrameAssembler(protocol.imaging)
    phase = SetupPhase(protocol, RoiChoice.from_protocol(protocol), previous, day=day)
    while not phase.done:
        for raw in src.read():
            v = asm.push(raw)
            if v is not None:
                phase.add(v.data)
    return phase.finish(suggest=src.suggest_groups), src.mouse.fov_offset


def test_alignment_recovers_injected_field_shifts_up_to_30_px() -> None:
    text = protocol_text(fov_shift_px=30.0, setup="frames = 60\nmax_alignment_px = 40.0")
    day1, _ = _setup_day(text, 1, None)
    prev = PreviousSetup(rois=day1.roi_set(), reference=day1.reference, day=1)
    errors, offsets = [], []
    for day in range(2, 10):
        setup, truth = _setup_day(text, day, prev)
        found = setup.report["fov_offset_px"]
        errors += [found[0] - truth[0], found[1] - truth[1]]
        offsets.append(truth)
        assert setup.report["alignment_quality"] >= 0.5
    assert max(abs(v) for o in offsets for v in o) >= 20  # the injected shifts do reach the range
    rms = float(np.sqrt(np.mean(np.square(errors))))
    print(f"\n[alignment] 8 days, injected shifts {offsets}: RMS error {rms:.3f} px")
    assert rms <= 0.3


def test_a_field_that_is_not_the_same_stops_with_a_clear_message() -> None:
    day1, _ = _setup_day(protocol_text(), 1, None)
    other = np.random.default_rng(0).permutation(day1.reference.ravel()).reshape(day1.reference.shape)
    prev = PreviousSetup(rois=day1.roi_set(), reference=other.astype(np.float32), day=1)
    with pytest.raises(SetupError, match=r"min_alignment_quality.*same field"):
        _setup_day(protocol_text(), 2, prev)


def test_choose_syntax() -> None:
    assert parse_choose("P+=0,2,4 P-=1,3") == {"P+": [0, 2, 4], "P-": [1, 3]}
    with pytest.raises(SetupError, match="GROUP=I,J"):
        parse_choose("P+ 0,1")


def test_a_live_rig_without_a_choice_lists_the_candidates() -> None:
    protocol = parse_protocol(protocol_text(), "t.toml")
    src = SimulatedSource(protocol, load_rig(RIG))
    phase = SetupPhase(protocol, RoiChoice.from_protocol(protocol))
    asm = FrameAssembler(protocol.imaging)
    while not phase.done:
        for raw in src.read():
            v = asm.push(raw)
            if v is not None:
                phase.add(v.data)
    with pytest.raises(SetupError, match=r"candidates were detected; choose the groups .*--choose"):
        phase.finish(suggest=None)  # no simulated operator: a real rig's operator must choose


# -------------------------------------------------------------------------------------- whole sessions
@pytest.fixture(scope="module")
def three_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`bcirig run --subject` three times: ROIs detected on day 1, found again on days 2 and 3."""
    tmp = tmp_path_factory.mktemp("subject")
    (tmp / "p.toml").write_text(protocol_text())
    for _ in range(3):
        assert main(["run", "--subject", "M7", "--protocol", str(tmp / "p.toml"), "--rig", str(RIG),
                     "--mode", "lockstep", "--data-dir", str(tmp / "data")]) == 0
    return tmp / "data" / "M7"


@pytest.mark.slow
def test_three_days_detected_then_aligned_with_calibration_carried(three_days: Path) -> None:
    history = json.loads((three_days / "subject.json").read_text())["sessions"]
    assert [s["day"] for s in history] == [1, 2, 3] and all(s["outcome"] == "completed" for s in history)
    d1, d2, d3 = (s["setup"] for s in history)
    assert d1["method"] == "detect" and d1["operator"] == "simulated"
    assert d1["detection_score"]["bci_missing"] == [] and d1["detection_score"]["precision"] >= 0.8
    truth = [np.array(s["truth"]["fov_offset_px"]) for s in (d1, d2, d3)]
    assert truth[1].any() and (truth[2] - truth[1]).any()  # the field did move
    for today, yesterday, s in ((truth[1], truth[0], d2), (truth[2], truth[1], d3)):
        assert s["method"] == "previous"
        np.testing.assert_allclose(s["fov_offset_px"], today - yesterday, atol=0.3)  # the injected shift, found
    # the ROIs of day 3 are day 1's, moved by the field's offset since day 1
    with SessionFile(three_days / history[0]["folder"] / "session.h5") as a, \
            SessionFile(three_days / history[2]["folder"] / "session.h5") as c:
        ya, yc = a.f["rois/pix_y"][()], c.f["rois/pix_y"][()]
        xa, xc = a.f["rois/pix_x"][()], c.f["rois/pix_x"][()]
        offset = np.round(truth[2] - truth[0]).astype(int)
        assert (yc - ya == offset[0]).all() and (xc - xa == offset[1]).all()
        # the set-up is frozen in the file: its live frames and its report
        assert c.f["setup/frames"].shape == (300, 1, 128, 128)
        assert json.loads(c.f["setup"].attrs["report"])["method"] == "previous"
        # calibration carried forward: day 3's task got day 2's threshold_z, and difficulty never dropped
        carried = json.loads(c.attrs["carried"])
        assert carried["threshold_z"] == history[1]["carry_forward"]["threshold_z"]
    z = [s["carry_forward"]["threshold_z"] for s in history]
    assert z[0] <= z[1] + 1e-9 and z[1] <= z[2] + 1e-9


@pytest.mark.slow
def test_replay_of_a_session_whose_rois_were_detected_is_identical(three_days: Path) -> None:
    first = json.loads((three_days / "subject.json").read_text())["sessions"][0]
    rep = replay(three_days / first["folder"] / "session.h5")
    assert rep.identical, rep.text()


def _true_rois(text: str) -> list[Roi]:
    protocol = parse_protocol(text, "t.toml")
    return list(make_mouse(protocol, load_rig(RIG)).rois())


@pytest.mark.slow
def test_a_session_from_an_imagej_roi_set(tmp_path: Path) -> None:
    """ROIs drawn in Fiji (here: polygons around the simulated BCI somata), named P+0 ... as labs do."""
    text = protocol_text(fov_shift_px=0.0)
    rois = []
    for r in _true_rois(text):
        cy, cx = r.centroid_yx
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        rad = np.sqrt(r.npix / np.pi)
        rois.append(roifile.ImagejRoi.frompoints(np.c_[cx + 0.5 + rad * np.cos(t), cy + 0.5 + rad * np.sin(t)],
                                                 name=r.name))
    roifile.roiwrite(tmp_path / "RoiSet.zip", rois)
    (tmp_path / "p.toml").write_text(text)
    assert main(["run", "--protocol", str(tmp_path / "p.toml"), "--rois", str(tmp_path / "RoiSet.zip"),
                 "--mode", "lockstep", "--data-dir", str(tmp_path / "data"), "--subject", "F1"]) == 0
    (session,) = (tmp_path / "data" / "F1").glob("*/session.h5")
    with SessionFile(session) as sf:
        report = json.loads(sf.f["setup"].attrs["report"])
        assert report["method"] == "imagej" and report["rois"] == 8
        names = [n.decode() for n in sf.f["rois/name"][()]]
        groups = [g.decode() for g in sf.f["rois/group"][()]]
        assert names == [r.name for r in _true_rois(text)] and groups.count("P+") == groups.count("P-") == 4
        assert sf.attrs["complete"] and len(sf.table("trials")["outcome"]) == 4


@pytest.mark.slow
def test_a_session_from_suite2p_files(tmp_path: Path) -> None:
    """suite2p output in its documented layout; its cells are chosen into groups by index."""
    text = protocol_text(fov_shift_px=0.0)
    true = _true_rois(text)
    folder = tmp_path / "suite2p" / "plane0"
    folder.mkdir(parents=True)
    stat = [{"ypix": r.y.astype(np.int32), "xpix": r.x.astype(np.int32), "lam": r.w.astype(np.float32),
             "med": [int(r.centroid_yx[0]), int(r.centroid_yx[1])], "npix": int(r.npix)} for r in true]
    np.save(folder / "stat.npy", np.array(stat, dtype=object), allow_pickle=True)
    np.save(folder / "iscell.npy", np.array([[1.0, 0.9]] * len(stat)))
    np.save(folder / "ops.npy", np.array({"Ly": 128, "Lx": 128}, dtype=object), allow_pickle=True)  # suite2p's dict
    (tmp_path / "p.toml").write_text(text)
    common = ["run", "--protocol", str(tmp_path / "p.toml"), "--rois", str(folder), "--mode", "lockstep",
              "--data-dir", str(tmp_path / "data"), "--subject", "S1", "--choose", "P+=0,1,2,3 P-=4,5,6,7"]
    assert main(common) == 2  # pickled files refused without the explicit flag
    assert main([*common, "--allow-pickle"]) == 0
    (session,) = (tmp_path / "data" / "S1").glob("*/session.h5")
    with SessionFile(session) as sf:
        assert json.loads(sf.f["setup"].attrs["report"])["method"] == "suite2p"
        np.testing.assert_array_equal(sf.f["rois/pix_y"][()], np.concatenate([r.y for r in true]))
        assert sf.attrs["complete"]


def test_a_roi_file_that_does_not_exist_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(protocol_text(setup='rois = "imagej"\nroi_file = "missing.zip"'))
    assert main(["run", "--protocol", str(tmp_path / "p.toml"), "--data-dir", str(tmp_path / "d"),
                 "--mode", "lockstep"]) == 2
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").rglob("session.h5"))
