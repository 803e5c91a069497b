"""``profile(model, data)``: every figure of one model on one target, each with how it was got.

``counted``: exact from the model's structure and one traced forward pass (params, MACs, weight
bytes, the conv/FC split). ``measured``: observed (file size via ``os.path.getsize`` of the real
artifact, latency on a runtime, accuracy on the test split). ``estimated``: from a model of the
hardware (peak activation memory, energy). A figure that was not obtained is ``None``, never a
guess.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.profile.counts import LayerCount, count_params, has_rule, is_atomic, layer_counts
from dnnzip.profile.energy import EnergyEstimate, EnergyTable, estimate_energy, layer_kinds
from dnnzip.profile.latency import LatencyStats
from dnnzip.profile.memory import MemoryEstimate, activation_memory, weight_bytes
from dnnzip.profile.split import Split, split
from dnnzip.profile.trace import trace


@dataclass
class Profile:
    model: str
    input_shape: tuple[int, ...]          # one sample
    batch_size: int
    threads: int
    params_total: int
    params_nonzero: int
    macs_dense: int                       # per sample
    macs_effective: int
    weight_bytes: int                     # parameters + buffers as held in memory
    layers: list[LayerCount]
    memory: MemoryEstimate
    energy: EnergyEstimate
    split: Split
    latency: dict[str, LatencyStats] = field(default_factory=dict)
    artifact: str | None = None
    artifact_bytes: int | None = None
    accuracy: float | None = None
    accuracy_split: str | None = None
    how: dict[str, str] = field(default_factory=dict)

    def latency_p50(self, runtime: str) -> float:
        from dnnzip.runtime import canonical_name

        runtime = canonical_name(runtime)
        if runtime not in self.latency:
            raise ConfigError(f"no latency measured on {runtime!r}; measured: "
                              f"{', '.join(self.latency) or 'none'}")
        return self.latency[runtime].p50_ms

    def energy_mj(self) -> float:
        return self.energy.total_mj

    def budget_point(self, runtime: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``Budget.violations`` (None where not measured)."""
        from dnnzip.runtime import canonical_name

        runtime = canonical_name(runtime) if runtime else next(iter(self.latency), None)
        lat = self.latency.get(runtime) if runtime else None
        return dict(bytes_=self.artifact_bytes, latency_ms=lat.p50_ms if lat else None,
                    energy_mj=self.energy.total_mj, accuracy=self.accuracy)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["latency"] = {k: v.to_dict() for k, v in self.latency.items()}
        return d


def _batched(example: Any, batch_size: int) -> Any:
    """``example`` with its first sample repeated to ``batch_size`` rows."""
    if isinstance(example, tuple):
        return tuple(_batched(e, batch_size) for e in example)
    if not isinstance(example, torch.Tensor) or example.dim() == 0:
        return example
    one = example[:1]
    return one.repeat(batch_size, *([1] * (one.dim() - 1)))


def _example(model: nn.Module, data: Any, example: Any) -> Any:
    if example is not None:
        return example
    if data is not None:
        return data.example_input(1)
    if callable(getattr(model, "example_input", None)):  # e.g. token ids for zoo minilm
        return model.example_input(1)
    ref = getattr(model, "_dnnzip_ref", None)
    if isinstance(ref, dict) and "zoo" in ref:
        from dnnzip import zoo

        shape = zoo.info(ref["zoo"]).get("input_shape")
        if shape:
            return torch.randn(1, *shape)
    raise ConfigError(f"profile needs an input to trace {type(model).__name__}: pass data= (a "
                      f"DataBundle), example= (a tensor), or a zoo model")


def profile(model: nn.Module, data: Any = None, *, runtimes: tuple[str, ...] = ("torch",),
            batch_size: int = 1, threads: int = 1, artifact: str | os.PathLike | None = None,
            repeats: int = 200, warmup: int = 20,
            energy_table: EnergyTable | str | os.PathLike | None = None,
            example: Any = None, accuracy_split: str = "test") -> Profile:
    """Profile ``model`` (not modified) on ``runtimes`` at ``batch_size`` and ``threads``.

    data: a DataBundle; gives the example input and the accuracy on ``accuracy_split``.
    artifact: path of the packed file; its size is ``os.path.getsize`` (else ``None``).
    energy_table: replaces the Horowitz 45 nm table (an ``EnergyTable`` or a JSON/YAML path).
    example: the input to trace and time (else one from ``data``, else the zoo input shape).
    """
    from dnnzip.runtime import check_threads, get_runtime

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"The 'batch_size' parameter of profile must be an int >= 1. "
                          f"Got {batch_size!r} instead.")
    check_threads(threads)
    if isinstance(runtimes, str):
        runtimes = (runtimes,)
    if isinstance(energy_table, (str, os.PathLike)):
        energy_table = EnergyTable.load(energy_table)
    x = _batched(_example(model, data, example), batch_size)
    first = x[0] if isinstance(x, tuple) else x
    tr = trace(model, x, is_atomic=is_atomic, is_rule=has_rule)
    rows = layer_counts(tr)
    total, nonzero = count_params(model)
    floating, abits = layer_kinds(model)
    energy = estimate_energy(rows, energy_table, floating=floating, activation_bits=abits)
    latency = {}
    for name in runtimes:
        rt = get_runtime(name)
        session = rt.prepare(model, x, threads=threads)
        latency[rt.name] = rt.time(session, x, warmup=warmup, repeats=repeats)
    nbytes = os.path.getsize(artifact) if artifact is not None else None
    acc = None
    if data is not None and getattr(data, accuracy_split, None) is not None:
        from dnnzip.train import evaluate

        acc = evaluate(model, getattr(data, accuracy_split))
    how = dict(params="counted", macs="counted", weight_bytes="counted", split="counted",
               latency="measured", memory="estimated (liveness of traced activations)",
               energy=f"estimated ({energy.table})",
               artifact_bytes="measured (os.path.getsize)" if nbytes is not None
               else "not measured (no artifact given)",
               accuracy=f"measured (torch, {accuracy_split} split)" if acc is not None
               else "not measured (no data)")
    return Profile(model=type(model).__name__, input_shape=tuple(first.shape[1:]),
                   batch_size=batch_size, threads=threads, params_total=total,
                   params_nonzero=nonzero, macs_dense=sum(r.macs_dense for r in rows),
                   macs_effective=sum(r.macs_effective for r in rows),
                   weight_bytes=weight_bytes(model), layers=rows,
                   memory=activation_memory(tr), energy=energy, split=split(rows),
                   latency=latency, artifact=str(artifact) if artifact is not None else None,
                   artifact_bytes=nbytes, accuracy=acc,
                   accuracy_split=accuracy_split if acc is not None else None, how=how)
