"""Claim (issue 3, benchmark 1): connection pruning of LeNet-300-100 on Fashion-MNIST keeps
<= 8 % of the weights at <= 0.5 pt accuracy loss (Han et al. 2015: 8 % kept at +-0 on MNIST).
Peer in the same run: torch.nn.utils.prune global L1 magnitude with the same schedule and
fine-tuning budget.

    .venv/bin/python -m benchmarks.prune_connection            # full Fashion-MNIST
    .venv/bin/python -m benchmarks.prune_connection --quick    # 20k train samples, fewer epochs
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from benchmarks.prune_common import Timer, accuracy, fashion, machine, macs, table, trained
from dnnzip.prune.masked import sparsity_report
from dnnzip.prune.schedule import Schedule, sparsity_steps
from dnnzip.registry import Context, apply
from dnnzip.train import TrainSettings, fit


def torch_peer(base, data, target, steps, ft_epochs, lr, seed=0):
    model = copy.deepcopy(base)
    layers = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    for s in sparsity_steps(Schedule.AGP, target, steps):
        total = sum(m.weight.numel() for m, _ in layers)
        already = sum(int((m.weight == 0).sum()) for m, _ in layers)
        step = (s * total - already) / max(total - already, 1)  # fraction of what is left
        tprune.global_unstructured(layers, pruning_method=tprune.L1Unstructured, amount=step)
        fit(model, data, TrainSettings(epochs=ft_epochs, lr=lr, batch_size=128, seed=seed))
    for m, n in layers:
        tprune.remove(m, n)
    kept = sum(int((m.weight != 0).sum()) for m, _ in layers) / sum(m.weight.numel()
                                                                   for m, _ in layers)
    return model.eval(), kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sparsity", type=float, default=0.92)
    ap.add_argument("--seed", type=int, default=0, help="baseline init + every fine-tune")
    args = ap.parse_args()
    torch.set_num_threads(1)
    limit, ep, steps, ft = (20000, 4, 4, 1) if args.quick else (None, 10, 5, 2)
    lr = 1e-3
    data = fashion(limit)
    with Timer() as t:
        base = trained("lenet300", data, epochs=ep, lr=lr, seed=args.seed)
    base_acc = accuracy(base, data)
    x = data.example_input(1)
    rows = [{"method": "dense baseline", "kept %": 100.0, "acc %": 100 * base_acc,
             "drop pt": 0.0, "eff. MACs": macs(base, x, True), "time s": t.s}]

    for scope in ("layer", "global"):
        ctx = Context(data=data, epochs=ft, lr=lr, batch_size=128, seed=args.seed)
        with Timer() as t:
            out = apply("prune.connection", base, {"sparsity": args.sparsity, "scope": scope,
                                                   "schedule": "agp", "steps": steps}, ctx)
        kept = 1 - sparsity_report(out)["total"]
        a = accuracy(out, data)
        rows.append({"method": f"dnnzip prune.connection ({scope}, AGP x{steps})",
                     "kept %": 100 * kept, "acc %": 100 * a, "drop pt": 100 * (base_acc - a),
                     "eff. MACs": macs(out, x, True), "time s": t.s})
    with Timer() as t:
        peer, kept = torch_peer(base, data, args.sparsity, steps, ft, lr, args.seed)
    a = accuracy(peer, data)
    rows.append({"method": f"peer: torch.nn.utils.prune global L1 (AGP x{steps})",
                 "kept %": 100 * kept, "acc %": 100 * a, "drop pt": 100 * (base_acc - a),
                 "eff. MACs": "", "time s": t.s})
    print(f"## prune.connection, LeNet-300-100, Fashion-MNIST ({len(data.train)} train / "
          f"{len(data.test)} test), baseline {ep} epochs, {steps} AGP steps x {ft} fine-tune "
          f"epoch(s), target sparsity {args.sparsity}, seed {args.seed}\n\nMachine: {machine()}\n")
    print(table(rows, ["method", "kept %", "acc %", "drop pt", "eff. MACs", "time s"]))


if __name__ == "__main__":
    main()
