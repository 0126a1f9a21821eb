"""The command line: sub-commands reach their own parsers; validate names what is wrong."""

import pytest

from bcirig.cli import main
from tests.conftest import ROOT


@pytest.mark.parametrize("command", ["bench", "simulate"])
def test_pass_through_subcommands_accept_their_own_options(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: bcirig {command}" in capsys.readouterr().out


def test_validate_accepts_shipped_files_and_rejects_a_broken_one(capsys):
    files = [str(ROOT / "protocols" / "francioni2026.toml"), str(ROOT / "hardware" / "rigs" / "sim.toml")]
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert "francioni2026.toml: ok (protocol)" in out and "sim.toml: ok (rig)" in out
    assert main(["validate", str(ROOT / "tests" / "configs" / "broken" / "out_of_range.toml")]) == 2
    assert "calibration.target_hit_fraction = 1.5" in capsys.readouterr().err


def test_replay_of_a_missing_file_is_one_line(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.h5")]) == 2
    assert capsys.readouterr().err.strip() == f"bcirig: {tmp_path / 'nope.h5'}: no such session file"
