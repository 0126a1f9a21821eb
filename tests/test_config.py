"""Protocol and rig files: the shipped ones validate; broken ones get one line naming file, key, value."""

import subprocess
import sys

import pytest

from bcirig.config import ConfigError, load_protocol, load_rig, parse_rig
from tests.conftest import ROOT

BROKEN = ROOT / "tests" / "configs" / "broken"


@pytest.mark.parametrize("name", ["francioni2026", "demo"])
def test_shipped_protocols_validate_with_the_study_values(name):
    p = load_protocol(ROOT / "protocols" / f"{name}.toml")
    assert p.trials.grey_frames == 15 and p.outcomes.hit.reward_on_hold_frame == 3
    assert p.feedback.steps == 7 and p.feedback.step_deg == 15.0
    assert p.calibration.windows == 200 and p.readout.smoothing.frames == 3
    assert p.outcomes.timeout.iti_frames == 90 and p.outcomes.hit.iti_frames == 15


def test_francioni_defaults():
    p = load_protocol(ROOT / "protocols" / "francioni2026.toml")
    assert (p.trials.length_frames, p.baseline.frames, p.readout.f0.percentile) == (870, 12000, 10.0)
    assert p.f0_window_frames == 4 * 870


@pytest.mark.parametrize("rig", ["sim", "sim-emulated"])
def test_shipped_rigs_validate(rig):
    assert load_rig(ROOT / "hardware" / "rigs" / f"{rig}.toml").rig.name == rig


@pytest.mark.parametrize(
    ("fixture", "key", "value", "expected"),
    [
        ("unknown_key", "trials.lenght_frames", "300", "no such key; known keys here: count, length_frames"),
        ("wrong_type", "readout.smoothing.frames", "'three'", "an integer in [1, 10000]"),
        ("out_of_range", "calibration.target_hit_fraction", "1.5", "a number in [0.0, 1.0]"),
        ("bad_enum", "outcomes.timeout.iti_screen", "'purple'", "one of 'grating', 'grey', 'black'"),
        ("unknown_decoder", "readout.decoder.name", "'telepathy'", ""),
        ("reward_after_hold", "outcomes.hit.reward_on_hold_frame", "3", "<= outcomes.hit.hold_frames (2)"),
    ],
)
def test_broken_protocol_names_file_key_value_and_expectation(fixture, key, value, expected):
    path = BROKEN / f"{fixture}.toml"
    with pytest.raises(ConfigError) as err:
        load_protocol(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key} = {value}: expected ")
    assert expected in msg
    assert "\n" not in msg


def test_rig_refuses_a_network_bind_without_keys():
    with pytest.raises(ConfigError, match=r"bus.host = '0.0.0.0'"):
        parse_rig('[rig]\nname = "r"\n[bus]\ntransport = "tcp"\nhost = "0.0.0.0"\n', "r.toml")


def test_cli_prints_one_line_and_exits_2_before_anything_starts(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bcirig.cli", "run", str(BROKEN / "unknown_key.toml"), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "trials.lenght_frames = 300" in lines[0]
    assert not any(tmp_path.iterdir())  # no session directory, no process started
