"""Helpers for frozen config dataclasses: declarative checks with one message template,
and a JSON/YAML-safe round trip (enums as values, tuples as lists)."""
from __future__ import annotations

import dataclasses
import enum
import math
import typing
from typing import Any

from dnnzip.errors import ConfigError


def _fail(obj: Any, name: str, expected: str, got: Any) -> None:
    raise ConfigError(
        f"The '{name}' parameter of {type(obj).__name__} must be {expected}. Got {got!r} instead."
    )


def check_range(obj: Any, name: str, low: float | None = None, high: float | None = None,
                *, left_open: bool = False, right_open: bool = False, integer: bool = False) -> None:
    """Check that ``obj.name`` is a number in the given interval."""
    value = getattr(obj, name)
    kind = "an int" if integer else "a float"
    lb = "(" if left_open else "["
    rb = ")" if right_open else "]"
    interval = f" in {lb}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{rb}"
    expected = kind + (interval if (low is not None or high is not None) else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(obj, name, expected, value)
    if integer and not isinstance(value, int):
        _fail(obj, name, expected, value)
    if isinstance(value, float) and not math.isfinite(value):
        _fail(obj, name, expected, value)
    if low is not None and (value < low or (left_open and value == low)):
        _fail(obj, name, expected, value)
    if high is not None and (value > high or (right_open and value == high)):
        _fail(obj, name, expected, value)


def check_choice(obj: Any, name: str, choices: typing.Iterable[Any]) -> None:
    value = getattr(obj, name)
    choices = list(choices)
    if value not in choices:
        _fail(obj, name, "one of " + ", ".join(repr(c) for c in choices), value)


def coerce_enum(obj: Any, name: str, enum_cls: type[enum.Enum]) -> None:
    """Accept an enum member or its value (e.g. from YAML); store the member."""
    value = getattr(obj, name)
    if isinstance(value, enum_cls):
        return
    try:
        object.__setattr__(obj, name, enum_cls(value))
    except ValueError:
        _fail(obj, name, "one of " + ", ".join(repr(m.value) for m in enum_cls), value)


def coerce_tuple(obj: Any, name: str) -> None:
    """Lists from JSON/YAML become tuples so the frozen config stays hashable."""
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))
    elif isinstance(value, str):
        object.__setattr__(obj, name, (value,))


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Build config ``cls`` from a dict; unknown keys are a ConfigError naming them."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{cls.__name__} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"valid parameters are: {', '.join(sorted(names))}."
        )
    try:
        return cls(**data)
    except TypeError as exc:  # e.g. a value of the wrong type deep inside
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
