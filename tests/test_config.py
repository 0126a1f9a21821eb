"""Protocol and rig files: the shipped ones validate; broken ones get one line naming file, key, value."""

import dataclasses
import math
import subprocess
import sys
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bcirig.config import ConfigError, Protocol, Rig, load_config, load_protocol, load_rig, parse_protocol, parse_rig
from bcirig.preflight import check_session
from bcirig.schema import build, spec
from bcirig.setup import prepare_setup
from bcirig.sim import SimConfig
from tests.conftest import ROOT, protocol_text

BROKEN = ROOT / "tests" / "configs" / "broken"


@pytest.mark.parametrize("name", ["francioni2026", "demo"])
def test_shipped_protocols_validate_with_the_study_values(name: str) -> None:
    p = load_protocol(ROOT / "protocols" / f"{name}.toml")
    assert p.trials.grey_frames == 15 and p.outcomes.hit.reward_on_hold_frame == 3
    assert p.feedback.steps == 7 and p.feedback.step_deg == 15.0
    assert p.calibration.windows == 200 and p.readout.smoothing.frames == 3
    assert p.outcomes.timeout.iti_frames == 90 and p.outcomes.hit.iti_frames == 15


def test_francioni_defaults() -> None:
    p = load_protocol(ROOT / "protocols" / "francioni2026.toml")
    assert (p.trials.length_frames, p.baseline.frames, p.readout.f0.percentile) == (870, 12000, 10.0)
    assert p.f0_window_frames == 4 * 870


@pytest.mark.parametrize("rig", ["sim", "sim-emulated"])
def test_shipped_rigs_validate(rig: str) -> None:
    assert load_rig(ROOT / "hardware" / "rigs" / f"{rig}.toml").rig.name == rig


@pytest.mark.parametrize(
    ("fixture", "key", "value", "expected"),
    [
        ("unknown_key", "trials.lenght_frames", "300", "no such key; known keys here: count, length_frames"),
        ("wrong_type", "readout.smoothing.frames", "'three'", "an integer in [1, 10000]"),
        ("out_of_range", "calibration.target_hit_fraction", "1.5", "a number in [0.0, 1.0]"),
        ("bad_enum", "outcomes.timeout.iti_screen", "'purple'", "one of 'grating', 'grey', 'black'"),
        ("unknown_decoder", "readout.decoder.name", "'telepathy'",
         "one of 'two_population', 'ensemble', 'single_neuron', 'weighted', 'pca', 'spike_rate'"),
        ("reward_after_hold", "outcomes.hit.reward_on_hold_frame", "3", "<= outcomes.hit.hold_frames (2)"),
    ],
)
def test_broken_protocol_names_file_key_value_and_expectation(fixture: str, key: str, value: str,
                                                              expected: str) -> None:
    path = BROKEN / f"{fixture}.toml"
    with pytest.raises(ConfigError) as err:
        load_protocol(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {key} = {value}: expected ")
    assert expected in msg
    assert "\n" not in msg


def test_rig_refuses_a_network_bind_without_keys() -> None:
    with pytest.raises(ConfigError, match=r"bus.host = '0.0.0.0'"):
        parse_rig('[rig]\nname = "r"\n[bus]\ntransport = "tcp"\nhost = "0.0.0.0"\n', "r.toml")


def test_cli_prints_one_line_and_exits_2_before_anything_starts(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bcirig.cli", "run", str(BROKEN / "unknown_key.toml"), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "trials.lenght_frames = 300" in lines[0]
    assert not any(tmp_path.iterdir())  # no session directory, no process started


# ------------------------------------------------------------------ issue 9, case 7: bad protocol values
@pytest.mark.parametrize(
    ("section", "field", "limits"),
    [
        ("imaging", "frame_rate_hz", "[0.1, 20000.0]"),
        ("calibration", "target_hit_fraction", "[0.0, 1.0]"),
        ("reward", "volume_ul", "[0.0, 50.0]"),
        ("safety", "frame_timeout_ms", "[10.0, 60000.0]"),
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
def test_nan_and_infinity_are_refused_in_one_line(section: str, field: str, limits: str, value: str) -> None:
    text = protocol_text(**{section: f"{field} = {value}"}) if section in ("imaging", "calibration") else \
        protocol_text() + f"\n[{section}]\n{field} = {value}\n"
    with pytest.raises(ConfigError) as err:
        parse_protocol(text, "p.toml")
    shown = repr(float(value))
    assert str(err.value) == f"p.toml: {section}.{field} = {shown}: expected a finite number in {limits}"


def test_broken_fixture_with_nan_names_the_key() -> None:
    path = BROKEN / "nan_frame_rate.toml"
    with pytest.raises(ConfigError) as err:
        load_protocol(path)
    assert str(err.value) == f"{path}: imaging.frame_rate_hz = nan: expected a finite number in [0.1, 20000.0]"


def _float_paths(cls: type, prefix: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every float field of a config dataclass, as (dotted path, metadata), nested tables included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], f"{prefix}{f.name}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from _float_paths(tp, path + ".")
        elif tp is float or typing.get_args(tp) == (float, ...):
            yield path, f.metadata


def _nested(path: str, value: Any) -> dict[str, Any]:
    *outer, last = path.split(".")
    table: dict[str, Any] = {last: value}
    for key in reversed(outer):
        table = {key: table}
    return table


@pytest.mark.parametrize(("cls", "required"), [
    (Protocol, {"protocol": {"name": "p"}}), (Rig, {"rig": {"name": "r"}}), (SimConfig, {}),
])
def test_every_float_field_refuses_nan_unless_it_says_otherwise(cls: type, required: dict[str, Any]) -> None:
    paths = list(_float_paths(cls))
    assert len(paths) >= 3  # the walk finds the float fields (Protocol has 20, Rig 3, SimConfig 35)
    for path, meta in paths:
        table = {**required, **_nested(path, float("nan"))}  # no float lives in [protocol] or [rig]
        if meta.get("allow_nan"):
            build(cls, table, "f.toml")
            continue
        with pytest.raises(ConfigError, match=r"= nan: expected a finite number"):
            build(cls, table, "f.toml")


@dataclasses.dataclass(frozen=True)
class _WithTuples:
    gains: tuple[float, ...] = spec((), doc="finite numbers")
    levels: tuple[float, ...] = spec((), allow_nan=True, doc="NaN means 'not set' here")
    offset: float = spec(0.0, allow_nan=True)


def test_floats_inside_a_tuple_must_be_finite_and_allow_nan_lets_a_field_opt_out() -> None:
    with pytest.raises(ConfigError) as err:
        build(_WithTuples, {"gains": [1.0, float("inf")]}, "t.toml")
    assert str(err.value) == "t.toml: gains[1] = inf: expected a finite number"
    with pytest.raises(ConfigError, match=r"gains\[0\] = nan"):
        build(_WithTuples, {"gains": [float("nan")]}, "t.toml")
    ok = build(_WithTuples, {"gains": [1, 2.5], "levels": [float("nan")], "offset": float("nan")}, "t.toml")
    assert ok.gains == (1.0, 2.5) and math.isnan(ok.levels[0]) and math.isnan(ok.offset)


def test_a_binary_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "protocol.toml"
    path.write_bytes(b"\x89HDF\r\n\x1a\n\x00\x00\xff\xfe")  # the start of an HDF5 file
    for load, what in ((load_protocol, "protocol"), (load_rig, "rig"), (load_config, "protocol or rig")):
        with pytest.raises(ConfigError) as err:
            load(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: (file) = '(binary)': expected a {what} file in TOML")
        assert "not a text file (UTF-8): byte 0x89 at offset 0" in msg and "\n" not in msg


def test_a_rig_file_without_its_rig_table_is_read_as_a_rig() -> None:
    path = BROKEN / "rig_without_rig_table.toml"
    with pytest.raises(ConfigError) as err:
        load_rig(path)
    assert str(err.value) == (f"{path}: rig = (missing): expected a [rig] table naming the rig (name = ...); "
                              "the file has [source], [valve]")
    with pytest.raises(ConfigError) as err:
        load_config(path)  # either kind: neither table, so it is refused and the likely one named
    assert str(err.value).startswith(f"{path}: (file) = '(no [protocol] or [rig] table)': expected a [protocol] ")
    assert "looks like a rig file lacking its [rig] table" in str(err.value)


def test_a_file_given_as_the_wrong_kind_says_which_kind_it_is() -> None:
    rig, proto = ROOT / "hardware" / "rigs" / "sim.toml", ROOT / "protocols" / "demo.toml"
    with pytest.raises(ConfigError, match=r"protocol = \(missing\): expected a \[protocol\] table; this is a rig"):
        load_protocol(rig)
    with pytest.raises(ConfigError, match=r"rig = \(missing\): expected a \[rig\] table; this is a protocol file"):
        load_rig(proto)


def test_load_config_decides_by_the_protocol_or_rig_table() -> None:
    assert isinstance(load_config(ROOT / "protocols" / "demo.toml"), Protocol)
    assert isinstance(load_config(ROOT / "hardware" / "rigs" / "sim-emulated.toml"), Rig)
    path = BROKEN / "both_tables.toml"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: (file) = '[protocol] and [rig]': expected one of them: a protocol file "
                              "has a [protocol] table, a rig file a [rig] table")


SIM_RIG = ROOT / "hardware" / "rigs" / "sim.toml"


@pytest.mark.parametrize(
    ("fixture", "start", "expected"),
    [
        ("sim_unknown_key", "simulation.rulee = 'vectorized'", "no such key; known keys here: rule, level"),
        ("too_many_rois", "rois.groups = {'P+': 100000, 'P-': 4}", "at most 159 BCI neurons in all (here 100004)"),
        ("rois_outgrow_field", "rois.groups = {'P+': 4, 'P-': 4}",
         "no more BCI neurons than the simulated 32x32 field holds: 1 of 8 somata"),
        ("decoder_group_missing", "rois.groups = {'A': 4, 'B': 4}",
         "the groups the decoder reads (decoder 'two_population': readout.decoder.plus = 'P+'"),
    ],
)
def test_check_session_refuses_what_the_simulated_set_up_cannot_build(fixture: str, start: str, expected: str) -> None:
    path = BROKEN / f"{fixture}.toml"
    protocol, rig = load_protocol(path), load_rig(SIM_RIG)  # each file is fine on its own
    with pytest.raises(ConfigError) as err:
        check_session(protocol, rig)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {start}: expected ") and expected in msg and "\n" not in msg
    if fixture == "decoder_group_missing":
        return  # the set-up builds no decoder: the pipeline node does (when the supervisor calls check_session)
    with pytest.raises(ConfigError) as err:
        prepare_setup(protocol, rig)  # what `bcirig run` builds first: the same line, not a traceback
    assert str(err.value) == msg


def test_check_session_passes_the_shipped_protocols_and_skips_the_simulator_on_a_live_rig() -> None:
    for name in ("demo", "francioni2026"):
        check_session(load_protocol(ROOT / "protocols" / f"{name}.toml"), load_rig(SIM_RIG))
    live = parse_rig('[rig]\nname = "r"\n[source]\nkind = "network"\n[sound]\nkind = "buffer"\n', "r.toml")
    check_session(load_protocol(BROKEN / "too_many_rois.toml"), live)  # its ROIs come from its set-up file


def test_config_imports_no_stage_package() -> None:
    code = ("import sys, bcirig.config, bcirig.preflight; "
            "print(sorted(m for m in sys.modules if m.startswith(('bcirig.sim', 'bcirig.processing', "
            "'bcirig.acquisition', 'bcirig.control'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("fixture", ["too_many_rois", "rois_outgrow_field"])
def test_cli_run_refuses_rois_the_simulated_field_cannot_hold_in_one_line(fixture: str, tmp_path: Path) -> None:
    path = BROKEN / f"{fixture}.toml"
    out = subprocess.run(
        [sys.executable, "-m", "bcirig.cli", "run", str(path), "--data-dir", str(tmp_path), "--mode", "lockstep"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"bcirig: {path}: rois.groups = ")
    assert not any(tmp_path.iterdir())  # no session directory, no process started
