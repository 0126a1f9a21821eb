"""The [simulation] table: defaults, and one clear error naming simulation.<key>."""

from __future__ import annotations

import pytest

from bcirig.schema import ConfigError
from bcirig.sim import LearningRule, SimLevel, parse_sim_config


def test_defaults_describe_a_learning_mouse() -> None:
    cfg = parse_sim_config({}, "p.toml")
    assert cfg.rule is LearningRule.VECTORIZED
    assert cfg.level is SimLevel.TRACES
    assert {r.value for r in LearningRule} == {"vectorized", "scalar", "none", "blocked"}


def test_values_are_taken() -> None:
    cfg = parse_sim_config({"rule": "blocked", "units": 120, "noise_hz": 2}, "p.toml")
    assert (cfg.rule, cfg.units, cfg.noise_hz) == (LearningRule.BLOCKED, 120, 2.0)
    assert cfg.rule is LearningRule.BLOCKED  # a member, not the file's string


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        ({"rule": "hebbian"}, "simulation.rule", "one of 'vectorized'"),
        ({"units": 3}, "simulation.units", "an integer in [20, 5000]"),
        ({"learning_rate": -1.0}, "simulation.learning_rate", "a number in [0.0, 10.0]"),
        ({"bogus": 1}, "simulation.bogus", "no such key"),
        ({"level": 3}, "simulation.level", "one of 'pixels', 'traces'"),
    ],
)
def test_errors_name_file_key_and_expectation(table: dict[str, object], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_sim_config(table, "protocols/x.toml")
    assert err.value.key == key
    assert str(err.value).startswith(f"protocols/x.toml: {key} = ")
    assert expected in str(err.value)
