"""``render_table(profile)``: the profile as rich tables for the CLI (figures labelled with how
they were obtained)."""
from __future__ import annotations

from typing import Any

from dnnzip.profile.core import Profile


def _si(n: float, unit: str = "") -> str:
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g} {prefix}{unit}"
    return f"{n:.4g} {unit}".strip()


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for div, prefix in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {prefix} ({n:,} B)"
    return f"{n:,} B"


def render_table(profile: Profile, *, all_layers: bool = False) -> Any:
    """A rich renderable: a summary table and a per-layer table (rows with params or MACs,
    unless ``all_layers``)."""
    from rich.console import Group
    from rich.table import Table

    p = profile
    summary = Table(title=f"{p.model} — input {tuple(p.input_shape)}, batch {p.batch_size}, "
                          f"{p.threads} thread(s)", show_header=True)
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_column("how")
    summary.add_row("parameters", f"{p.params_total:,} ({p.params_nonzero:,} non-zero)", "counted")
    summary.add_row("MACs / sample", f"{_si(p.macs_dense)} dense, {_si(p.macs_effective)} effective",
                    "counted")
    summary.add_row("weights in memory", _bytes(p.weight_bytes), "counted")
    summary.add_row("artifact file", _bytes(p.artifact_bytes), p.how.get("artifact_bytes", ""))
    for name, lat in p.latency.items():
        summary.add_row(f"latency {name}", f"p50 {lat.p50_ms:.4g} ms, p95 {lat.p95_ms:.4g} ms",
                        f"measured ({lat.repeats} repeats, {lat.warmup} warm-up)")
    summary.add_row("peak activations", _bytes(p.memory.peak_bytes), "estimated")
    summary.add_row("energy / sample", f"{p.energy.total_mj * 1e3:.4g} µJ", p.how.get("energy", ""))
    acc = "-" if p.accuracy is None else f"{100 * p.accuracy:.2f} %"
    summary.add_row("accuracy", acc, p.how.get("accuracy", ""))
    summary.caption = f"conv/FC split (DeepEye): {p.split.recommendation}"

    layers = Table(title="per layer (MACs per sample)")
    for col in ("layer", "type", "params", "non-zero", "MACs", "eff. MACs", "bits", "out elems"):
        layers.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for r in p.layers:
        if not all_layers and not (r.params or r.macs_dense):
            continue
        layers.add_row(r.name, r.type, f"{r.params:,}", f"{r.params_nonzero:,}",
                       f"{r.macs_dense:,}", f"{r.macs_effective:,}", str(r.weight_bits),
                       f"{r.output_elements:,}")
    return Group(summary, layers)
