"""Deep Compression (Han et al. 2016 [35]) on Fashion-MNIST: prune -> fine-tune -> share -> code.

Issue target: the ``.dnz`` of LeNet-300-100 and LeNet-5 >= 40x smaller than the fp32 file at
<= 0.5 pt accuracy loss, accuracy measured after reloading each file. What this script does on top
of the paper's recipe (``dnnzip/recipes/deep-compression.yaml``):
- per-layer sparsity (the big first fc layer prunes most, the first conv least);
- iterative pruning: ``prune.connection`` one-shot to a rising target, each round fine-tuned;
- per-layer widths for ``share.kmeans``;
- every fine-tune (after pruning and of the centroids) uses KD from the dense model as the loss.
Each stage is packed, reloaded and evaluated; the table is Deep Compression Tables 2-5 style.
The final model is also packed with the paper-faithful Huffman coder to compare with ANS.

    .venv/bin/python benchmarks/share_deep_compression.py --model lenet300 --quick
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dnnzip import registry, zoo
from dnnzip.artifact import pack, read_manifest, unpack
from dnnzip.data import load_data
from dnnzip.distill import kd_loss_fn
from dnnzip.registry import Context
from dnnzip.train import TrainSettings, evaluate, finetune, fit

PLANS = {  # per-layer final sparsity and k-means width
    "lenet300": dict(sparsity={"fc1": 0.94, "fc2": 0.88, "fc3": 0.7},
                     bits={"fc1": 4, "fc2": 5, "fc3": 5}),
    "lenet5": dict(sparsity={"conv1": 0.3, "conv2": 0.82, "fc1": 0.96, "fc2": 0.8},
                   bits={"conv1": 8, "conv2": 5, "fc1": 4, "fc2": 5}),
}


def dense_model(name: str, data, epochs: int, cache: Path) -> torch.nn.Module:
    model = zoo.build(name)
    path = cache / f"{name}_dense_e{epochs}_n{len(data.train)}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path))
    else:
        torch.manual_seed(0)
        fit(model, data, TrainSettings(epochs=epochs, batch_size=128, lr=1e-3, progress=False))
        torch.save(model.state_dict(), path)
    return model.eval()


def stage(rows: list, label: str, model, out: Path, data, t0: float, **pack_kw) -> torch.nn.Module:
    path = out / f"{len(rows):02d}_{label}.dnz"
    with torch.no_grad():  # w * mask leaves -0.0 where w < 0, and lossless packing keeps the sign
        for m in model.modules():  # bit; -0.0 + 0.0 == +0.0, so the values are unchanged
            if isinstance(getattr(m, "weight", None), torch.Tensor):
                m.weight.add_(0.0)
    nbytes = pack(model, path, **pack_kw)
    back = unpack(path)
    nz = sum(int((m.weight != 0).sum()) for m in back.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    rows.append(dict(stage=label, bytes=nbytes, accuracy=evaluate(back, data.test),
                     nonzero_weights=nz, seconds=round(time.perf_counter() - t0, 1)))
    print(json.dumps(rows[-1]), flush=True)
    return back


def run(name: str, args) -> dict:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    data = load_data("fashion-mnist", seed=0, limit=args.limit)
    dense = dense_model(name, data, args.dense_epochs, Path(args.out))
    plan, rows = PLANS[name], []
    for item in filter(None, (args.sparsity or "").split(",")):  # e.g. fc1=0.93
        layer, value = item.split("=")
        if layer in plan["sparsity"]:
            plan = dict(plan, sparsity={**plan["sparsity"], layer: float(value)})
    kd = kd_loss_fn(dense, T=args.temperature, alpha=args.alpha)
    ctx = Context(data=data, teacher=dense, epochs=0, batch_size=128, lr=args.lr, seed=0,
                  max_batches=args.max_batches, progress=False)
    t0 = time.perf_counter()
    stage(rows, "dense", dense, out, data, t0)
    model = dense
    for r in range(1, args.rounds + 1):  # iterative pruning, Han et al.'s keep^(r/n) schedule
        targets = {n: 1 - (1 - s) ** (r / args.rounds) for n, s in plan["sparsity"].items()}
        model = registry.apply("prune.connection", model,
                               {"sparsity": 0.5, "layer_sparsity": targets}, ctx)
        finetune(model, ctx, epochs=args.epochs, loss_fn=kd)
        model.eval()
    model = stage(rows, "pruned", model, out, data, t0)
    cfg = {"bits": 5, "conv_bits": 8, "overrides": plan["bits"], "distill": True,
           "temperature": args.temperature, "alpha": args.alpha}
    shared = registry.apply("share.kmeans", model, cfg, Context(**{**ctx.__dict__,
                                                                  "epochs": args.epochs}))
    stage(rows, "shared", shared, out, data, t0)
    huff = {"re:.*weight": ("sparse", {"gap_bits": 5, "values": "codebook", "coder": "huffman"})}
    stage(rows, "shared_huffman", shared, out, data, t0, encodings=huff)
    man = read_manifest(out / f"{len(rows) - 2:02d}_shared.dnz")
    encodings = {k: t["encoding"] for k, t in man["tensors"].items()}
    return dict(model=name, rows=rows, encodings=encodings, train=len(data.train),
                dense_epochs=args.dense_epochs, epochs=args.epochs, rounds=args.rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=[*PLANS, "both"], default="both")
    p.add_argument("--quick", action="store_true", help="20k training images, 1 epoch per stage")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--dense-epochs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2, help="fine-tune epochs per stage/round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--out", default="runs/share_dc")
    p.add_argument("--sparsity", default=None,
                   help="override the plan's per-layer sparsity, e.g. fc1=0.93,fc2=0.88")
    args = p.parse_args()
    if args.quick:
        args.limit = args.limit or 20000
        args.dense_epochs, args.epochs = min(args.dense_epochs, 4), 1
    torch.set_num_threads(1)
    results = [run(n, args) for n in (PLANS if args.model == "both" else [args.model])]
    for res in results:
        base = res["rows"][0]
        print(f"\n{res['model']} (train {res['train']}, dense {res['dense_epochs']} ep, "
              f"{res['rounds']} prune rounds x {res['epochs']} ep)")
        print("| stage | bytes | ratio vs fp32 .dnz | accuracy | Δ pt | non-zero weights |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            print(f"| {r['stage']} | {r['bytes']:,} | {base['bytes'] / r['bytes']:.1f}x | "
                  f"{100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - base['accuracy']):+.2f} | "
                  f"{r['nonzero_weights']:,} |")
        print("encodings:", res["encodings"])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
