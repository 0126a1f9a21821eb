"""Exports: NWB passes the community's nwbinspector and reads back equal; suite2p's layout reads back equal.

The session is the demo protocol run for real (supervisor, node processes, lockstep), with its frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nwbinspector import Importance
from pynwb import NWBHDF5IO

from bcirig.cli import main
from bcirig.export import export_suite2p
from bcirig.export.nwb import export_nwb, inspect
from bcirig.processing import RoiSet
from bcirig.processing.roi_files import load_suite2p
from bcirig.recording import SessionFile
from bcirig.supervisor import Supervisor
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
RATE_HZ, GREY_FRAMES = 30.0, 15  # protocols/demo.toml


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = Supervisor(ROOT / "protocols" / "demo.toml", ROOT / "hardware" / "rigs" / "sim.toml",
                        data_dir=tmp_path_factory.mktemp("demo"), mode="lockstep").run()
    assert result.ok, result.error
    return result.path


@pytest.fixture(scope="module")
def nwb_path(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_nwb(demo, tmp_path_factory.mktemp("nwb") / "demo.nwb")


@pytest.fixture(scope="module")
def recorded(demo: Path) -> dict[str, Any]:
    with SessionFile(demo) as sf:
        out: dict[str, Any] = {t: sf.table(t) for t in ("readout", "feedback", "trials", "commands", "acks")}
        out["events"] = sf.events()
        out["rois"] = RoiSet.from_arrays(sf.rois())
        out["frames"] = sf.frames()[[0, -1]]
        out["n_frames"] = sf.frames().shape[0]
        out["protocol"] = sf.protocol_text
        out["reference"] = sf.reference()
    return out


def test_the_nwb_file_passes_nwbinspector_with_no_critical_or_violation_finding(nwb_path: Path) -> None:
    found = inspect(nwb_path)
    bad = [f"{m.importance.name} {m.check_function_name} {m.object_name}: {m.message}" for m in found
           if m.importance in (Importance.ERROR, Importance.PYNWB_VALIDATION, Importance.CRITICAL,
                               Importance.BEST_PRACTICE_VIOLATION)]
    assert bad == []
    # what is left are suggestions a lab fills in with --experimenter and --institution
    assert {m.check_function_name for m in found} <= {"check_experimenter_exists", "check_institution"}


def test_the_nwb_file_reads_back_with_the_session_files_traces_trials_and_rois(nwb_path: Path, recorded: dict[str,
                                                                               Any]) -> None:
    ro, trials = recorded["readout"], recorded["trials"]
    with NWBHDF5IO(str(nwb_path), "r") as io:
        nwb = io.read()
        ophys = nwb.processing["ophys"]
        fl = ophys["Fluorescence"]
        for name, col in (("F", "F"), ("Neuropil", "neuropil"), ("F0", "F0")):
            np.testing.assert_array_equal(fl[name].data[:], ro[col])
            assert fl[name].rate == RATE_HZ and fl[name].starting_time == 0.0
        np.testing.assert_array_equal(ophys["DfOverF"]["dff"].data[:], ro["dff"])
        np.testing.assert_array_equal(ophys["bci_readout"].data[:], ro["readout"])
        np.testing.assert_array_equal(ophys["bci_readout_raw"].data[:], ro["readout_raw"])
        np.testing.assert_array_equal(ophys["motion_correction"].data[:], ro["shift"])
        # the ROI table: names, groups, kinds, and masks with bcirig's weights
        table = ophys["ImageSegmentation"]["roi_table"]
        rois = recorded["rois"]
        assert list(table["roi_name"][:]) == rois.names and list(table["group"][:]) == rois.groups
        assert list(table["is_soma"][:]) == [r.kind == "soma" for r in rois]
        for i, roi in enumerate(rois):
            mask = table["image_mask"][i]
            np.testing.assert_array_equal(mask[roi.y, roi.x], roi.w)
            assert np.count_nonzero(mask) == roi.npix
        # the trials: outcomes and frames as recorded; times on the 30 Hz frame clock
        t = nwb.trials.to_dataframe()
        assert list(t["outcome"]) == [o.decode() for o in trials["outcome"]]
        np.testing.assert_array_equal(t["start_frame"], trials["start_frame"])
        np.testing.assert_array_equal(t["stop_frame"], trials["outcome_frame"])
        np.testing.assert_allclose(t["start_time"], trials["start_frame"] / RATE_HZ)
        np.testing.assert_allclose(t["go_cue"], (trials["start_frame"] + GREY_FRAMES) / RATE_HZ)
        hit = trials["outcome"] == b"hit"
        assert list(t["hit"]) == hit.tolist() and hit.sum() > 0
        np.testing.assert_allclose(t["threshold_crossing_times"][hit], trials["outcome_frame"][hit] / RATE_HZ)
        assert t["threshold_crossing_times"][~hit].isna().all()
        # each hit's reward on the 3rd hold frame: the command's frame, 2 frames after the crossing
        cmd = recorded["commands"]["frame"]
        np.testing.assert_allclose(t["reward_time"][hit], cmd / RATE_HZ)
        np.testing.assert_allclose(t["reward_time"][hit] - t["threshold_crossing_times"][hit], 2 / RATE_HZ)
        # rewards and licks as events
        rewards = nwb.events["rewards"].to_dataframe()
        np.testing.assert_allclose(rewards["timestamp"], cmd / RATE_HZ)
        assert list(rewards["delivered"]) == recorded["acks"]["ok"].tolist()
        licks = [e for e in recorded["events"] if e["name"] == "lick"]
        assert len(nwb.events["licks"]) == len(licks) > 0
        # the frames, and the metadata a reader needs
        two_p = nwb.acquisition["TwoPhotonSeriesPlane0"]
        assert two_p.data.shape == (recorded["n_frames"], 128, 128)
        np.testing.assert_array_equal(two_p.data[0], recorded["frames"][0, 0])
        np.testing.assert_array_equal(two_p.data[-1], recorded["frames"][-1, 0])
        assert nwb.notes == recorded["protocol"] and "[rig]" in nwb.data_collection
        assert nwb.subject.subject_id == "sim" and nwb.subject.species == "Mus musculus"
        assert nwb.imaging_planes["ImagingPlane0"].imaging_rate == RATE_HZ


def test_the_export_command_inspects_and_leaves_frames_out_on_request(demo: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "small.nwb"
    assert main(["export", "nwb", str(demo), "-o", str(out), "--no-frames", "--inspect",
                 "--experimenter", "Doe, Jane", "--institution", "Somewhere"]) == 0
    text = capsys.readouterr().out
    assert "nwbinspector: 0 critical, 0 best-practice violations, 0 suggestions" in text
    with NWBHDF5IO(str(out), "r") as io:
        assert "TwoPhotonSeriesPlane0" not in io.read().acquisition
    assert out.stat().st_size < demo.stat().st_size / 10


def test_suite2p_export_reads_back_as_suite2ps_layout_describes(demo: Path, recorded: dict[str, Any],
                                                                tmp_path: Path) -> None:
    (folder,) = export_suite2p(demo, tmp_path)
    assert folder == tmp_path / "suite2p" / "plane0"
    rois = recorded["rois"]
    back = load_suite2p(tmp_path, allow_pickle=True, plane=0)  # bcirig's own suite2p reader
    assert len(back) == len(rois)
    for a, b in zip(rois, back, strict=True):
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.w, b.w)
    # the documented files, directly
    ro = recorded["readout"]
    F, Fneu = np.load(folder / "F.npy"), np.load(folder / "Fneu.npy")
    assert F.shape == Fneu.shape == (len(rois), len(ro["frame"])) and F.dtype == np.float32
    np.testing.assert_array_equal(F, ro["F"].T)
    np.testing.assert_array_equal(Fneu, ro["neuropil"].T)
    iscell = np.load(folder / "iscell.npy")
    assert iscell.shape == (len(rois), 2) and (iscell[:, 0] == 1).all()  # every demo ROI is a soma
    stat = np.load(folder / "stat.npy", allow_pickle=True)
    assert [s["name"] for s in stat] == rois.names and [s["group"] for s in stat] == rois.groups
    for s, roi in zip(stat, rois, strict=True):
        assert s["npix"] == roi.npix and s["med"] == [float(np.median(roi.y)), float(np.median(roi.x))]
    ops = np.load(folder / "ops.npy", allow_pickle=True).item()
    assert (ops["Ly"], ops["Lx"], ops["nframes"], ops["fs"]) == (128, 128, len(ro["frame"]), RATE_HZ)
    np.testing.assert_array_equal(ops["meanImg"], recorded["reference"][0])
    np.testing.assert_array_equal(ops["yoff"], -ro["shift"][:, 0])  # suite2p's sign: the motion itself
    assert ops["neucoeff"] == 0.7
