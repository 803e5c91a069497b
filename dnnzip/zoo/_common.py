"""Argument checks and geometry helpers shared by the zoo families.

Every zoo builder takes keyword-only, JSON-able arguments; bad values are a ``ConfigError`` in the
house template (``The 'width' parameter of zoo model 'resnet' must be ... Got ... instead.``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from torch import nn

from dnnzip.errors import ConfigError


def fail(model: str, name: str, expected: str, got: Any) -> None:
    raise ConfigError(
        f"The '{name}' parameter of zoo model '{model}' must be {expected}. Got {got!r} instead."
    )


def check_int(model: str, name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail(model, name, f"an int >= {low}", value)
    return value


def check_float(model: str, name: str, value: Any, low: float = 0.0) -> float:
    """A finite number strictly greater than ``low``."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= low):
        fail(model, name, f"a number > {low}", value)
    return float(value)


def check_choice(model: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        fail(model, name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_bool(model: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail(model, name, "a bool", value)
    return value


def check_ints(model: str, name: str, value: Any, n: int | None = None, low: int = 1) -> list[int]:
    """A list/tuple of ints >= low (of length ``n`` when given); an int is broadcast to ``n``."""
    if isinstance(value, int) and not isinstance(value, bool) and n is not None:
        value = [value] * n
    want = f"a list of {n if n else 'one or more'} ints >= {low}" + (" (or one int)" if n else "")
    if (not isinstance(value, (list, tuple)) or not value or (n is not None and len(value) != n)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value)):
        fail(model, name, want, value)
    return list(value)


def image_size(model: str, value: Any, minimum: int = 1) -> tuple[int, int]:
    """``input_size`` as (H, W): an int (square) or a pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in value)):
        fail(model, "input_size", f"an int >= {minimum} or a pair [H, W] of such ints", value)
    return int(value[0]), int(value[1])


def scaled(channels: int, mult: float, *, multiple: int = 1, minimum: int = 1) -> int:
    """``channels * mult`` rounded to the nearest multiple of ``multiple`` (at least ``minimum``)."""
    c = max(minimum, int(round(channels * mult / multiple)) * multiple)
    return max(c, multiple)


def pool_out(size: int, kernel: int, stride: int | None = None, padding: int = 0) -> int:
    """Output length of a (max/avg) pooling or convolution window, floor mode."""
    stride = stride or kernel
    return (size + 2 * padding - kernel) // stride + 1


class ZooModule(nn.Module):
    """Base of the zoo's own module classes: ``spec_kwargs`` returns the constructor arguments.

    The arguments are recorded once, at construction, so ``dnnzip.nn.spec.describe`` can rebuild
    the same skeleton; children that a technique later replaced or resized are recorded (and
    rebuilt) separately, so forward code reads sizes from the layers, never from these arguments.
    """

    def _record(self, **kwargs: Any) -> None:
        self._spec_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}

    def spec_kwargs(self) -> dict[str, Any]:
        return dict(self._spec_args)
