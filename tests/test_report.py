"""A subject's report from real sessions (supervisor, node processes, lockstep): numbers checked by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bcirig.cli import main
from bcirig.recording import SessionFile, SessionFileError
from bcirig.report import write_report
from bcirig.supervisor import Supervisor
from tests.conftest import ROOT

PROTOCOL = ROOT / "tests" / "configs" / "e2e.toml"
RIG = ROOT / "hardware" / "rigs" / "sim.toml"
RATE_HZ = 30.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("subject")
    for _ in range(3):
        result = Supervisor(PROTOCOL, RIG, data_dir=data, subject="m1", mode="lockstep").run()
        assert result.ok, result.error
    return data / "m1"


def test_the_report_has_a_row_per_session_with_numbers_recounted_from_the_files(subject: Path, tmp_path: Path) -> None:
    page = write_report([subject], tmp_path / "report")
    sessions = sorted(subject.glob("*/session.h5"))
    assert len(sessions) == 3
    with open(page.parent / "days.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["session"] for r in rows] == [s.parent.name for s in sessions]
    for row, path in zip(rows, sessions, strict=True):
        with SessionFile(path) as sf:
            trials = sf.table("trials")
            calib = next(e["data"] for e in sf.events() if e["name"] == "calibration")
            licks = [e for e in sf.events() if e["name"] == "lick"]
            rewards = sf.table("commands")["frame"]
            dff, groups = sf.table("readout")["dff"], [g.decode() for g in sf.rois()["group"]]
            phase = sf.table("feedback")["phase"]
        hit = trials["outcome"] == b"hit"
        assert int(row["trials"]) == len(hit) and int(row["hits"]) == hit.sum()
        assert float(row["hit_rate"]) == pytest.approx(hit.mean())
        assert float(row["chance"]) == pytest.approx(calib["achieved_fraction"])
        assert float(row["threshold"]) == pytest.approx(calib["threshold"])
        assert float(row["median_time_to_hit_s"]) == pytest.approx(np.median(trials["frames"][hit]) / RATE_HZ)
        assert int(row["rewards"]) == len(rewards) and int(row["licks"]) == len(licks)
        plus = [i for i, g in enumerate(groups) if g == "P+"]
        assert float(row["P+ dff baseline"]) == pytest.approx(np.nanmean(dff[phase == b"baseline"][:, plus]))
    # day 2 and 3 carried day 1's threshold (the study rule): never easier
    z = [float(r["threshold_z"]) for r in rows]
    assert z[1] >= z[0] - 1e-9 and z[2] >= z[1] - 1e-9
    report = json.loads((page.parent / "report.json").read_text())
    assert report["subject"] == "m1" and len(report["days"]) == 3
    assert all(len(d["lick_histogram_hz"]) == 24 for d in report["days"])  # -2 s .. 4 s in 250 ms bins
    # the simulated mouse licks about 7 Hz after a reward and 0.3 Hz otherwise
    before = np.nanmean([d["lick_rate_before_hz"] for d in report["days"]])
    after = np.nanmean([d["lick_rate_after_hz"] for d in report["days"]])
    assert after > 2.0 > before


def test_the_page_shows_every_figure_and_needs_no_python(subject: Path, tmp_path: Path) -> None:
    page = write_report([subject], tmp_path / "r")
    text = page.read_text()
    for name in ("hit_rate", "time_to_hit", "threshold", "groups", "motion", "latency", "licks"):
        png = page.parent / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}.png"' in text
    assert "dendrites.png" not in text  # this protocol has no dendrite ROIs
    assert "Hit rate against calibrated chance" in text and 'href="days.csv"' in text


def test_the_summary_command_takes_a_subject_folder_or_session_files(subject: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(subject), "-o", str(tmp_path / "a")]) == 0
    assert "report written" in capsys.readouterr().out
    one = sorted(subject.glob("*/session.h5"))[:1]
    assert main(["summary", str(one[0]), "-o", str(tmp_path / "b")]) == 0
    with open(tmp_path / "b" / "days.csv") as f:
        assert len(list(csv.DictReader(f))) == 1
    with pytest.raises(SessionFileError, match="no such subject folder or session file"):
        write_report([tmp_path / "nobody"])


def test_dendrite_rois_add_the_trial_aligned_hits_against_misses_figure(tmp_path: Path) -> None:
    text = PROTOCOL.read_text().replace("[imaging]\n", "[imaging]\nplanes = 2\nbci_plane = 1\n")
    text = text.replace('[rois]\ngroups = { "P+" = 3, "P-" = 3 }', '[rois]\ngroups = { "P+" = 3, "P-" = 3 }\n'
                        "dendrites = true")
    assert "dendrites = true" in text and "planes = 2" in text
    proto = tmp_path / "dendrites.toml"
    proto.write_text(text)
    result = Supervisor(proto, RIG, data_dir=tmp_path, subject="d1", mode="lockstep").run()
    assert result.ok, result.error
    page = write_report([result.path], tmp_path / "report")
    assert 'src="dendrites.png"' in page.read_text()
    aligned = json.loads((page.parent / "report.json").read_text())["aligned_mean_dff"]
    assert set(aligned) == {"P+ soma", "P+ dendrite", "P- soma", "P- dendrite"}
    n = len(next(r for r in aligned["P+ soma"].values() if r))
    assert n == round(7.0 * RATE_HZ)  # 1 s before to 6 s after the start of feedback
