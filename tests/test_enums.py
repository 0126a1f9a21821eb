"""Choices are enums: every enum field refuses a non-member in one line naming the members, the files'
strings come back as members, and each registry that dispatches on an enum has an entry for every member."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bcirig.acquisition import factory
from bcirig.cli import main
from bcirig.config import (
    F0,
    F0Kind,
    Framing,
    Protocol,
    RegistrationMode,
    Rig,
    Smoothing,
    SmoothingKind,
    SourceKind,
    load_protocol,
    load_rig,
    parse_protocol,
)
from bcirig.decoder_params import DECODER_SCHEMAS, EnsembleOrder, ReadoutSignal
from bcirig.messages import Log, LogLevel, decode, encode
from bcirig.modes import RunMode
from bcirig.nodes import NodeSpec
from bcirig.processing import f0 as f0_rules
from bcirig.processing.rois import Roi, RoiError, RoiKind
from bcirig.processing.smoothing import Smoother
from bcirig.schema import ConfigError, build
from bcirig.sim import LearningRule, SimConfig, SimLevel, parse_sim_config
from bcirig.supervisor import Supervisor
from tests.conftest import ROOT, protocol_text

NOT_A_MEMBER = "not-a-member"


def _enum_of(tp: Any) -> type[enum.Enum] | None:
    """The enum a field holds (``E`` or ``E | None``), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [_enum_of(a) for a in typing.get_args(tp) if a is not type(None)]
        return found[0] if found else None
    return tp if isinstance(tp, type) and issubclass(tp, enum.Enum) else None


def _enum_paths(cls: type, prefix: str = "") -> Iterator[tuple[str, type[enum.Enum]]]:
    """Every enum field of a config dataclass, as (dotted key path, enum), nested tables included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], f"{prefix}{f.name}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from _enum_paths(tp, path + ".")
        elif (e := _enum_of(tp)) is not None:
            yield path, e


def _table(path: str, value: Any) -> dict[str, Any]:
    *outer, last = path.split(".")
    table: dict[str, Any] = {last: value}
    for key in reversed(outer):
        table = {key: table}
    return table


def _members(e: type[enum.Enum]) -> str:
    return ", ".join(repr(m.value) for m in e)


ROOTS: list[tuple[type, dict[str, Any]]] = [
    (Protocol, {"protocol": {"name": "p"}}),
    (Rig, {"rig": {"name": "r"}}),
    (SimConfig, {}),
    *((schema.params, {}) for schema in DECODER_SCHEMAS.values()),
]
CASES = [(cls, required, path, e) for cls, required in ROOTS for path, e in _enum_paths(cls)]


def test_the_walk_finds_the_enum_fields_of_every_schema() -> None:
    found = {(cls.__name__, path) for cls, _, path, _ in CASES}
    # one of each family, so an enum turned back into a str (or a walk that stops finding them) fails here
    assert {("Protocol", "registration.mode"), ("Protocol", "readout.f0.kind"), ("Protocol", "readout.signal"),
            ("Protocol", "setup.rois"), ("Rig", "source.kind"), ("Rig", "source.cloose.byte_order"),
            ("Rig", "bus.transport"), ("Rig", "valve.kind"), ("SimConfig", "rule"), ("SimConfig", "level"),
            ("EnsembleParams", "order")} <= found
    assert len(CASES) >= 20


def _choices(cls: type, prefix: str = "") -> Iterator[tuple[str, tuple[Any, ...]]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], f"{prefix}{f.name}"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from _choices(tp, path + ".")
        elif "choices" in f.metadata:
            yield path, tuple(f.metadata["choices"])


def test_no_schema_field_chooses_among_strings() -> None:
    """A choice of words is an enum; only numbers (the baud rates) stay a choices list."""
    listed = {path: values for cls, _ in ROOTS for path, values in _choices(cls)}
    assert set(listed) == {"valve.baud", "lickport.baud"}
    assert all(isinstance(v, int) for values in listed.values() for v in values)


@pytest.mark.parametrize(("cls", "required", "path", "e"), CASES,
                         ids=[f"{cls.__name__}.{path}" for cls, _, path, _ in CASES])
def test_every_enum_field_refuses_a_non_member_in_one_line_naming_the_members(
        cls: type, required: dict[str, Any], path: str, e: type[enum.Enum]) -> None:
    table = {**required, **_table(path, NOT_A_MEMBER)}
    with pytest.raises(ConfigError) as err:
        build(cls, table, "f.toml")
    assert str(err.value) == f"f.toml: {path} = {NOT_A_MEMBER!r}: expected one of {_members(e)}"
    for member in e:  # and each member is taken, as the member itself
        value: Any = build(cls, {**required, **_table(path, member.value)}, "f.toml")
        for key in path.split("."):
            value = getattr(value, key)
        assert value is member


def test_a_protocol_with_a_wrong_choice_gets_one_line_naming_the_file_key_value_and_members(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(protocol_text() + '\n[registration]\nmode = "elastic"\n')
    with pytest.raises(ConfigError) as err:
        load_protocol(path)
    assert str(err.value) == f"{path}: registration.mode = 'elastic': expected one of 'rigid', 'piecewise'"
    with pytest.raises(ConfigError) as err:  # inside the free decoder table too, the same line
        parse_protocol(protocol_text(**{"readout.decoder": 'name = "ensemble"\norder = "E3-E1"'}), "p.toml")
    assert str(err.value) == "p.toml: readout.decoder.order = 'E3-E1': expected one of 'E2-E1', 'E1-E2'"
    with pytest.raises(ConfigError) as err:  # a wrong type is refused the same way: no member is a number
        parse_sim_config({"rule": 3}, "p.toml")
    assert str(err.value) == "p.toml: simulation.rule = 3: expected one of 'vectorized', 'scalar', 'none', 'blocked'"


def test_the_files_strings_come_back_as_members_equal_to_them() -> None:
    p = load_protocol(ROOT / "protocols" / "francioni2026.toml")
    rig = load_rig(ROOT / "hardware" / "rigs" / "sim.toml")
    assert p.registration.mode is RegistrationMode.RIGID and p.readout.f0.kind is F0Kind.PERCENTILE
    assert p.readout.signal is ReadoutSignal.DFF and rig.source.kind is SourceKind.SIMULATED
    # a member is the file's string: it formats as it (messages name it so) and is a str where one is wanted
    assert f"{p.readout.f0.kind}" == "percentile" and isinstance(rig.source.network.framing, str)
    assert rig.source.network.framing is Framing.ZMQ
    sim = parse_sim_config({"rule": "blocked", "level": "pixels"}, "p.toml")
    assert (sim.rule, sim.level) == (LearningRule.BLOCKED, SimLevel.PIXELS)
    order = parse_protocol(protocol_text(**{"readout.decoder": 'name = "ensemble"\norder = "E1-E2"'}), "p.toml")
    assert order.readout.decoder["order"] == "E1-E2"  # the free table keeps the text; its schema, the member:
    assert DECODER_SCHEMAS["ensemble"].params(order=EnsembleOrder("E1-E2")).order is EnsembleOrder.E1_MINUS_E2


def test_every_source_kind_and_f0_rule_has_a_builder() -> None:
    assert set(factory._SOURCES) == set(SourceKind)
    assert set(f0_rules._F0_RULES) == set(F0Kind)
    p = parse_protocol(protocol_text(), "p.toml")
    for kind in F0Kind:  # each builds a rule of the protocol's window
        rule = f0_rules.make_f0_rule(dataclasses.replace(p, readout=dataclasses.replace(
            p.readout, f0=F0(kind=kind, window_frames=20))), n_rois=3)
        assert rule.window == 20


SMOOTHED = {  # 1, 2, 3, 4 in, by hand: frames = 3, alpha = 0.5
    SmoothingKind.MOVING_MEAN: [1.0, 1.5, 2.0, 3.0],  # the mean of the last 3 (fewer while warming up)
    SmoothingKind.EMA: [1.0, 1.5, 2.25, 3.125],  # s = 0.5 x + 0.5 s
    SmoothingKind.NONE: [1.0, 2.0, 3.0, 4.0],
}


def test_every_smoothing_kind_smooths_as_its_name_says() -> None:
    assert set(SMOOTHED) == set(SmoothingKind)
    for kind, expected in SMOOTHED.items():
        s = Smoother(Smoothing(kind=kind, frames=3, alpha=0.5))
        assert [s.update(x) for x in (1.0, 2.0, 3.0, 4.0)] == pytest.approx(expected), kind


def test_a_log_line_travels_with_its_level_as_a_member_and_an_unknown_level_is_refused() -> None:
    back = decode([bytes(p) for p in encode(Log(frame=3, node="task", level=LogLevel.WARNING, text="late"))])
    assert isinstance(back, Log) and back.level is LogLevel.WARNING
    parts = [bytes(p) for p in encode(Log(frame=3, node="task", level=LogLevel.ERROR, text="x"))]
    parts[1] = parts[1].replace(b'"error"', b'"shouting"')
    with pytest.raises(ValueError, match="shouting"):
        decode(parts)


def test_the_run_mode_travels_as_a_member_from_the_command_line_to_the_node(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = NodeSpec(name="pipeline", kind="pipeline", run_dir=str(tmp_path), endpoints={}, control="", upstream=[],
                    topics=[], drain_from=[], protocol_path="", rig_path="", mode=RunMode.LOCKSTEP)
    assert NodeSpec.load(spec.save()).mode is RunMode.LOCKSTEP
    protocol, rig = ROOT / "protocols" / "demo.toml", ROOT / "hardware" / "rigs" / "sim.toml"
    assert Supervisor(protocol, rig, data_dir=tmp_path, mode="lockstep").mode is RunMode.LOCKSTEP
    with pytest.raises(ValueError, match="mode must be 'realtime' or 'lockstep', not 'fast'"):
        Supervisor(protocol, rig, data_dir=tmp_path, mode="fast")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(protocol), "--mode", "fast"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fast' (choose from 'realtime', 'lockstep')" in capsys.readouterr().err


def test_an_roi_kind_from_a_file_is_a_member_and_a_wrong_one_is_named() -> None:
    roi = Roi.disk("d", 0, (5.0, 5.0), 2.0, kind="dendrite", parent="s")  # the file's text
    assert roi.kind is RoiKind.DENDRITE
    with pytest.raises(RoiError, match="ROI 'x': kind 'axon' is not one of soma, dendrite"):
        Roi.disk("x", 0, (5.0, 5.0), 2.0, kind="axon")
