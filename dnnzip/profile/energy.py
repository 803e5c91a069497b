"""Energy per inference, *estimated* from counted MACs and memory traffic.

Model (after Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, and its use in Han et al.,
"Learning both weights and connections", NeurIPS 2015 / EIE, ISCA 2016 — survey refs [19], [37]):

    E = sum_layers macs_effective * (mult(b) + add(b))                 compute
      + sum_layers ceil(nonzero_weights * b / 32) * dram_read_32bit       weights, read once
      + sum_layers (input + output elements) * a / 32 * sram_read_32bit   activations

``b`` is the layer's weight bit width and ``a`` its activation bit width (``activation_bits`` or
``act_bits`` attribute of the module, default 32). Arithmetic cost is looked up by kind and width: float32
layers use the fp32 entries, 16-bit float weights fp16, integer widths the smallest integer entry
that is at least as wide (int8 for 1..8 bits, int32 for 9..32) — Horowitz lists no narrower
integer unit, so sub-8-bit layers are charged as int8 (conservative). The add is charged at the
same width as the multiply (an int32 accumulator would cost 0.1 pJ instead of 0.03 pJ). Only
non-zero weights are read (sparse storage; index overhead is ignored) and weights are read from
DRAM once per inference, activations from an 8 KB SRAM. The figure is labelled ``estimated``
with the table's name. Replace the table with ``EnergyTable.load(path)`` (JSON or YAML).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dnnzip.config import check_range, from_dict
from dnnzip.errors import ConfigError
from dnnzip.profile.counts import LayerCount


@dataclass(frozen=True)
class EnergyTable:
    """Energy per operation in picojoules. Defaults: Horowitz ISSCC 2014, 45 nm, 0.9 V."""

    name: str = "horowitz-45nm"
    fp32_mult: float = 3.7
    fp32_add: float = 0.9
    fp16_mult: float = 1.1
    fp16_add: float = 0.4
    int32_mult: float = 3.1
    int32_add: float = 0.1
    int8_mult: float = 0.2
    int8_add: float = 0.03
    sram_read_32bit: float = 5.0      # 8 KB SRAM (10 pJ per 64 bit)
    dram_read_32bit: float = 640.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"The 'name' parameter of EnergyTable must be a non-empty string. "
                              f"Got {self.name!r} instead.")
        for f in ("fp32_mult", "fp32_add", "fp16_mult", "fp16_add", "int32_mult", "int32_add",
                  "int8_mult", "int8_add", "sram_read_32bit", "dram_read_32bit"):
            check_range(self, f, 0.0, None)

    @classmethod
    def load(cls, path: str | Path) -> "EnergyTable":
        """Read a table from JSON or YAML (keys as the fields; missing ones keep the defaults)."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError(f"energy table {str(p)!r} cannot be read: {exc}") from exc
        try:
            if p.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
            raise ConfigError(f"energy table {str(p)!r} is not valid "
                              f"{'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: {exc}"
                              ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"energy table {str(p)!r} must hold a mapping of field: value, "
                              f"got {type(data).__name__}")
        data.setdefault("name", p.stem)
        return from_dict(cls, data)

    def mac_pj(self, bits: int, *, floating: bool) -> float:
        """Energy of one multiply-accumulate at this width (module docstring)."""
        if floating and bits >= 32:
            return self.fp32_mult + self.fp32_add
        if floating and bits >= 16:
            return self.fp16_mult + self.fp16_add
        if bits <= 8:
            return self.int8_mult + self.int8_add
        return self.int32_mult + self.int32_add


HOROWITZ_45NM = EnergyTable()


@dataclass(frozen=True)
class EnergyEstimate:
    total_mj: float
    compute_mj: float
    weights_mj: float
    activations_mj: float
    table: str
    how: str = "estimated"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_energy(rows: list[LayerCount], table: EnergyTable | None = None, *,
                    floating: dict[str, bool] | None = None,
                    activation_bits: dict[str, int] | None = None) -> EnergyEstimate:
    """Energy of one inference (one sample) from per-layer counts.

    floating: per row name, whether its arithmetic is floating point; by default a row is
    floating iff its ``weight_bits`` is 16 or 32 and was not set by a quantized module (pass
    ``floating`` from ``layer_kinds(model)`` for exactness). activation_bits: per row name, 32
    by default.
    """
    table = table or HOROWITZ_45NM
    floating = floating or {}
    activation_bits = activation_bits or {}
    compute = weights = acts = 0.0
    for r in rows:
        is_float = floating.get(r.name, r.weight_bits in (16, 32))
        compute += r.macs_effective * table.mac_pj(r.weight_bits, floating=is_float)
        weights += math.ceil(r.params_nonzero * r.weight_bits / 32) * table.dram_read_32bit
        a = activation_bits.get(r.name, 32)
        acts += (r.input_elements + r.output_elements) * a / 32 * table.sram_read_32bit
    pj_to_mj = 1e-9
    return EnergyEstimate(total_mj=(compute + weights + acts) * pj_to_mj,
                          compute_mj=compute * pj_to_mj, weights_mj=weights * pj_to_mj,
                          activations_mj=acts * pj_to_mj, table=table.name)


def layer_kinds(model) -> tuple[dict[str, bool], dict[str, int]]:
    """(floating, activation_bits) per module name, read from the modules themselves.

    A module with a ``weight_bits`` attribute is integer arithmetic unless it also sets
    ``floating = True``; ``activation_bits`` is read when present."""
    floating, abits = {}, {}
    for name, m in model.named_modules():
        if getattr(m, "weight_bits", None) is not None:
            floating[name] = bool(getattr(m, "floating", False))
        for attr in ("activation_bits", "act_bits"):  # act_bits: dnnzip.quant layers
            bits = getattr(m, attr, None)
            if isinstance(bits, int) and not isinstance(bits, bool):
                abits[name] = bits or 32  # 0 = float activations
                break
    return floating, abits


def table_dict(table: EnergyTable) -> dict[str, Any]:
    return asdict(table)
