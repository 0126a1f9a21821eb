"""The command line: sub-commands reach their own parsers; validate names what is wrong."""

from pathlib import Path

import pytest

from bcirig.cli import main
from tests.conftest import ROOT


@pytest.mark.parametrize("command", ["bench", "simulate"])
def test_pass_through_subcommands_accept_their_own_options(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: bcirig {command}" in capsys.readouterr().out


def test_validate_accepts_shipped_files_and_rejects_a_broken_one(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(ROOT / "protocols" / "francioni2026.toml"), str(ROOT / "hardware" / "rigs" / "sim.toml")]
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert "francioni2026.toml: ok (protocol)" in out and "sim.toml: ok (rig)" in out
    assert main(["validate", str(ROOT / "tests" / "configs" / "broken" / "out_of_range.toml")]) == 2
    assert "calibration.target_hit_fraction = 1.5" in capsys.readouterr().err


def test_replay_of_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nope.h5")]) == 2
    assert capsys.readouterr().err.strip() == f"bcirig: {tmp_path / 'nope.h5'}: no such session file"


BROKEN = ROOT / "tests" / "configs" / "broken"


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("fixture", "key"),
    [("sim_unknown_key", "simulation.rulee = 'vectorized'"),
     ("too_many_rois", "rois.groups = {'P+': 100000, 'P-': 4}"),
     ("rois_outgrow_field", "rois.groups = {'P+': 4, 'P-': 4}"),
     ("decoder_group_missing", "rois.groups = {'A': 4, 'B': 4}"),
     ("nan_frame_rate", "imaging.frame_rate_hz = nan")],
)
def test_validate_refuses_what_run_would_refuse(fixture: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = BROKEN / f"{fixture}.toml"
    assert main(["validate", str(path)]) == 2
    assert _one_error_line(capsys).startswith(f"bcirig: {path}: {key}: expected ")
    assert main(["validate", str(path), str(ROOT / "hardware" / "rigs" / "sim-emulated.toml")]) == 2
    assert _one_error_line(capsys).startswith(f"bcirig: {path}: {key}: expected ")


def test_validate_checks_each_protocol_on_the_rig_given_or_the_default_one(capsys: pytest.CaptureFixture[str]) -> None:
    demo, rig = ROOT / "protocols" / "demo.toml", ROOT / "hardware" / "rigs" / "sim-emulated.toml"
    assert main(["validate", str(demo), str(rig)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{demo}: ok (protocol) on rig sim-emulated", f"{rig}: ok (rig)"]
    assert main(["validate", str(demo)]) == 0
    assert capsys.readouterr().out.strip() == f"{demo}: ok (protocol) on rig sim"


def test_validate_reads_a_file_by_its_protocol_or_rig_table(capsys: pytest.CaptureFixture[str]) -> None:
    path = BROKEN / "rig_without_rig_table.toml"
    assert main(["validate", str(path)]) == 2  # was read as a protocol: "source = ...: no such key"
    line = _one_error_line(capsys)
    assert line.startswith(f"bcirig: {path}: (file) = '(no [protocol] or [rig] table)': expected a [protocol] table")
    assert "looks like a rig file lacking its [rig] table" in line
    path = BROKEN / "both_tables.toml"
    assert main(["validate", str(path)]) == 2
    assert _one_error_line(capsys).startswith(f"bcirig: {path}: (file) = '[protocol] and [rig]': expected one")


def test_validate_of_a_binary_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rig.toml"
    path.write_bytes(bytes(range(256)))
    assert main(["validate", str(path)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"bcirig: {path}: (file) = '(binary)': expected a protocol or rig file in TOML")
    assert "not a text file (UTF-8): byte 0x80 at offset 128" in line
