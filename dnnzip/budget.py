"""Device budgets: storage, latency, energy and an accuracy floor, parsed from strings.

Sizes: ``20KB`` is 20,000 bytes and ``20KiB`` 20,480 (SI and IEC prefixes as written).
Times: ``0.5ms``, ``200us``, ``1s``. Energy: ``2mJ``, ``500uJ``. Accuracy: ``0.88``, ``88%``;
a drop: ``1%`` or ``0.01`` (absolute points of accuracy).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from dnnzip.errors import ConfigError

_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "K": 1000, "M": 1000**2}
_TIME_UNITS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
_ENERGY_UNITS = {"j": 1000.0, "mj": 1.0, "uj": 1e-3, "µj": 1e-3, "nj": 1e-6}
_NUM = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"


def _match(text: Any, units: dict, what: str, example: str, *, upper: bool) -> float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        unit_factor = 1.0
    else:
        s = str(text).strip()
        m = re.fullmatch(_NUM + r"([A-Za-zµ]*)\s*", s)
        key = (m.group(2).upper() if upper else m.group(2).lower()) if m else None
        if not m or key not in units:
            raise ConfigError(
                f"cannot parse {what} {text!r}; expected a number with a unit, e.g. {example} "
                f"(units: {', '.join(k for k in units if k)})"
            )
        value, unit_factor = float(m.group(1)), units[key]
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive number, got {text!r}")
    return value * unit_factor


def parse_size(text: Any) -> int:
    """'20KB' -> 20000 bytes."""
    return int(round(_match(text, _SIZE_UNITS, "size", "20KB or 1.5MiB", upper=True)))


def parse_latency(text: Any) -> float:
    """'0.5ms' -> 0.5 (milliseconds)."""
    if isinstance(text, str) and re.fullmatch(_NUM, text):
        raise ConfigError(f"latency {text!r} needs a unit, e.g. 0.5ms or 200us")
    return _match(text, _TIME_UNITS, "latency", "0.5ms or 200us", upper=False)


def parse_energy(text: Any) -> float:
    """'2mJ' -> 2.0 (millijoules)."""
    if isinstance(text, str) and re.fullmatch(_NUM, text):
        raise ConfigError(f"energy {text!r} needs a unit, e.g. 2mJ or 500uJ")
    return _match(text, _ENERGY_UNITS, "energy", "2mJ or 500uJ", upper=False)


def parse_fraction(text: Any, what: str = "accuracy") -> float:
    """'88%' or '0.88' -> 0.88. Must lie in [0, 1]."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise ConfigError(f"cannot parse {what} {text!r}; expected e.g. 0.88 or 88%") from None
    if not (0.0 <= value <= 1.0) or not math.isfinite(value):
        raise ConfigError(f"{what} must lie in [0, 1] (or 0%-100%), got {text!r}")
    return value


@dataclass(frozen=True)
class Budget:
    """What the target device allows. Any field left None is unconstrained.

    max_bytes: size of the packed artifact file. max_latency_ms: p50 latency, batch 1, on
    ``runtime``. max_energy_mj: estimated energy per inference. min_accuracy: test metric floor.
    max_accuracy_drop: allowed loss versus the baseline, in absolute points (0.01 = 1 pt).
    """

    max_bytes: int | None = None
    max_latency_ms: float | None = None
    max_energy_mj: float | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    runtime: str = "onnxruntime"

    def __post_init__(self):
        for name in ("max_bytes", "max_latency_ms", "max_energy_mj"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0
                                  or not math.isfinite(v)):
                raise ConfigError(f"The '{name}' parameter of Budget must be a positive number. "
                                  f"Got {v!r} instead.")
        for name in ("min_accuracy", "max_accuracy_drop"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ConfigError(f"The '{name}' parameter of Budget must be a float in [0, 1]. "
                                  f"Got {v!r} instead.")
        if self.min_accuracy is not None and self.max_accuracy_drop is not None:
            raise ConfigError("give either min_accuracy or max_accuracy_drop, not both: they "
                              "are two ways of stating one accuracy floor")

    @classmethod
    def parse(cls, *, max_size=None, max_latency=None, max_energy=None, min_accuracy=None,
              max_accuracy_drop=None, runtime: str = "onnxruntime") -> "Budget":
        return cls(
            max_bytes=parse_size(max_size) if max_size is not None else None,
            max_latency_ms=parse_latency(max_latency) if max_latency is not None else None,
            max_energy_mj=parse_energy(max_energy) if max_energy is not None else None,
            min_accuracy=parse_fraction(min_accuracy) if min_accuracy is not None else None,
            max_accuracy_drop=(parse_fraction(max_accuracy_drop, "accuracy drop")
                               if max_accuracy_drop is not None else None),
            runtime=runtime,
        )

    def accuracy_floor(self, baseline_accuracy: float | None = None) -> float | None:
        if self.min_accuracy is not None:
            return self.min_accuracy
        if self.max_accuracy_drop is not None and baseline_accuracy is not None:
            return baseline_accuracy - self.max_accuracy_drop
        return None

    def violations(self, *, bytes_: int | None = None, latency_ms: float | None = None,
                   energy_mj: float | None = None, accuracy: float | None = None,
                   baseline_accuracy: float | None = None) -> list[str]:
        """Which constraints a measured point breaks, each as a readable sentence."""
        out = []
        if self.max_bytes is not None and bytes_ is not None and bytes_ > self.max_bytes:
            out.append(f"size {bytes_:,} B > max {self.max_bytes:,} B")
        if self.max_latency_ms is not None and latency_ms is not None \
                and latency_ms > self.max_latency_ms:
            out.append(f"latency {latency_ms:.4g} ms > max {self.max_latency_ms:.4g} ms "
                       f"({self.runtime})")
        if self.max_energy_mj is not None and energy_mj is not None \
                and energy_mj > self.max_energy_mj:
            out.append(f"energy {energy_mj:.4g} mJ (estimated) > max {self.max_energy_mj:.4g} mJ")
        floor = self.accuracy_floor(baseline_accuracy)
        if floor is not None and accuracy is not None and accuracy < floor:
            out.append(f"accuracy {accuracy:.4f} < min {floor:.4f}")
        return out

    def is_empty(self) -> bool:
        return all(getattr(self, n) is None for n in ("max_bytes", "max_latency_ms",
                                                      "max_energy_mj", "min_accuracy",
                                                      "max_accuracy_drop"))

    def describe(self) -> str:
        parts = []
        if self.max_bytes is not None:
            parts.append(f"size <= {self.max_bytes:,} B")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms on {self.runtime}")
        if self.max_energy_mj is not None:
            parts.append(f"energy <= {self.max_energy_mj:g} mJ (estimated)")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:.4f}")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop * 100:.2f} pt")
        return ", ".join(parts) or "no constraints"
