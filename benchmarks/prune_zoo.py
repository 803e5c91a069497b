"""Claim (issue 3, benchmark 3): every zoo model pruned to 50 % channels runs, keeps its output
shape, and its latency and MACs fall; the pruned model packs to .dnz and reloads identically.

    .venv/bin/python -m benchmarks.prune_zoo [--quick] [--rounds 5]

Latency: torch eager, batch 1, 1 thread; the dense and the pruned model are timed in
interleaved rounds; "torch b1 ms" is the median over rounds of each round's p50, "low-end" the
lowest of the rounds' 10th percentiles (less disturbed by other jobs on a shared machine).
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

from benchmarks.prune_common import (interleaved_times, low_p10, machine, macs, median_p50,
                                     params, table)
from dnnzip import zoo
from dnnzip.artifact import pack, unpack
from dnnzip.registry import Context, apply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats = 30 if args.quick else 200
    rows = []
    for name in zoo.names():
        torch.manual_seed(0)
        base = zoo.build(name).eval()
        x = torch.randn(1, *zoo.info(name)["input_shape"])
        row = {"model": name}
        try:
            out = apply("prune.channel", base, {"ratio": 0.5, "finetune": False},
                        Context(example_input=x))
        except Exception as exc:  # report, do not hide
            rows.append({**row, "status": f"{type(exc).__name__}: {exc}"[:120]})
            continue
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.dnz")
            size = pack(out, path)
            same = torch.equal(unpack(path)(x), out(x))
        lat = interleaved_times({"base": (base, x, "torch", None),
                                 "out": (out, x, "torch", None)}, repeats, args.rounds)
        lb, la = median_p50(lat["base"]), median_p50(lat["out"])
        lo_b, lo_a = low_p10(lat["base"]), low_p10(lat["out"])
        mb, ma = macs(base, x), macs(out, x)
        row.update({"status": "ok" if out(x).shape == base(x).shape else "SHAPE CHANGED",
                    "MACs": mb, "MACs pruned": ma, "MACs x": mb / ma, "params": params(base),
                    "params pruned": params(out), "torch b1 ms": lb, "pruned ms": la,
                    "speed-up": lb / la, "low-end ms": lo_b, "low-end pruned ms": lo_a,
                    "low-end speed-up": lo_b / lo_a, ".dnz bytes": size,
                    "reload identical": same})
        rows.append(row)
    print(f"## prune.channel ratio 0.5 (l1, no fine-tuning) on every zoo model; latency: median "
          f"of {args.rounds} interleaved rounds of p50 over {repeats} calls\n\n"
          f"Machine: {machine()}\n")
    print(table(rows, ["model", "status", "MACs", "MACs pruned", "MACs x", "params",
                       "params pruned", "torch b1 ms", "pruned ms", "speed-up", "low-end ms",
                       "low-end pruned ms", "low-end speed-up", ".dnz bytes",
                       "reload identical"]))


if __name__ == "__main__":
    main()
