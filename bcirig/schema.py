"""A small validator that turns TOML tables into frozen dataclasses, or one clear error.

Each field of a config dataclass may carry metadata ``min``, ``max`` (inclusive), ``choices`` and ``doc``.
A float (also each float of a ``tuple[float, ...]``) must be finite: NaN passes every range check and
infinity is never a sensible setting, so both are refused unless the field says ``allow_nan=True``.
Supported field types: bool, int, float, str, enums, ``tuple[float, ...]``, ``dict[str, Any]`` (free
tables validated elsewhere), nested config dataclasses and ``X | None``.

Errors name the file, the key path, the value found and what was expected::

    protocols/demo.toml: readout.smoothing.frames = -3: expected an integer >= 1
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class ConfigError(ValueError):
    """A protocol or rig file that cannot be used; the message is one line a user can act on."""

    def __init__(self, file: str, key: str, value: Any, expected: str) -> None:
        self.file, self.key, self.value, self.expected = file, key, value, expected
        # An enum member is shown as the value a user writes in the file ('rigid', not <RegistrationMode...>).
        shown = "(missing)" if value is _MISSING else repr(value.value if isinstance(value, enum.Enum) else value)
        super().__init__(f"{file}: {key} = {shown}: expected {expected}")


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()
MISSING: Any = _MISSING  # the value of a key that is not there: a ConfigError shows it as "(missing)"


def spec(default: Any = dataclasses.MISSING, *, doc: str = "", **limits: Any) -> Any:
    """A dataclass field with validation limits (``min``, ``max``, ``choices``, ``allow_nan``) and a doc string."""
    meta = {"doc": doc, **limits}
    if isinstance(default, list | dict):
        frozen = default
        return dataclasses.field(default_factory=lambda: type(frozen)(frozen), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(tp: Any, meta: dict[str, Any], finite: bool = False) -> str:
    if "choices" in meta:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    names = {bool: "true or false", int: "an integer", float: "a finite number" if finite else "a number",
             str: "a string"}
    text = names.get(tp, getattr(tp, "__name__", str(tp)))
    if "min" in meta and "max" in meta:
        text += f" in [{meta['min']}, {meta['max']}]"
    elif "min" in meta:
        text += f" >= {meta['min']}"
    elif "max" in meta:
        text += f" <= {meta['max']}"
    return text


def _check_limits(value: Any, meta: dict[str, Any], tp: Any, file: str, key: str) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(file, key, value, _describe(tp, meta))
    if "min" in meta and value < meta["min"]:
        raise ConfigError(file, key, value, _describe(tp, meta))
    if "max" in meta and value > meta["max"]:
        raise ConfigError(file, key, value, _describe(tp, meta))


def _convert(value: Any, tp: Any, meta: dict[str, Any], file: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], meta, file, key)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(file, key, value, "a table")
        return build(tp, value, file, key)
    if tp is typing.Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, value, "a table")
        return dict(value)
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(file, key, value, f"a list of {_describe(item_tp, {})}s")
        item_meta = {"allow_nan": meta["allow_nan"]} if "allow_nan" in meta else {}
        return tuple(_convert(v, item_tp, item_meta, file, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(file, key, value, _describe(tp, meta)) from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, value, _describe(int, meta))
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, key, value, _describe(float, meta))
        value = float(value)
        if not math.isfinite(value) and not meta.get("allow_nan", False):
            raise ConfigError(file, key, value, _describe(float, meta, finite=True))
    elif tp is str and not isinstance(value, str):
        raise ConfigError(file, key, value, _describe(str, meta))
    _check_limits(value, meta, tp, file, key)
    return value


def build(cls: type[T], table: dict[str, Any], file: str, prefix: str = "") -> T:
    """Validate ``table`` against dataclass ``cls``; unknown keys, wrong types, out-of-range values raise."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            path = f"{prefix}.{key}" if prefix else key
            raise ConfigError(file, path, table[key], "no such key; known keys here: " + ", ".join(fields))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in table:
            kwargs[name] = _convert(table[name], hints[name], dict(f.metadata), file, path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(file, path, _MISSING, _describe(hints[name], dict(f.metadata)))
    return cls(**kwargs)
