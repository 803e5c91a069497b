"""Distillation benchmarks on Fashion-MNIST (survey Sec. VI), CPU, 1 thread.

``--full`` runs the full-scale Hinton KD benchmark (section ``kdfull``, below) on all of
Fashion-MNIST (54k train / 6k val / 10k test). Without it the reduced-budget sections run
(8,000-image pool by default):

Sections (``--sections``, comma-separated):
  kd       quarter-width LeNet-5 student: Hinton KD from a full LeNet-5 vs the same student
           trained alone (cross-entropy), same epochs, per seed.
  takd     tiny LeNet-5 (widths 2/4/16): TAKD (one interpolated assistant) vs plain KD.
  domain   target = rotated Fashion-MNIST: source-only student vs target-only CE student vs
           cross-domain KD (distill.domain), accuracy on the rotated test split.
  fskd     FSKD with 500 unlabelled samples after 50 % L1 channel pruning of conv1 and fc1
           (conv2 / fc2 keep their output widths, so they are aligned), no SGD.
  private  RONA-style KD through Gaussian noise on the soft targets, sweep of epsilon.
  prunekd  70 % channel pruning (prune.channel, all layers), then fine-tune with cross-entropy vs
           with kd_loss_fn(teacher) as the fine-tuning loss, same epochs.

Every number is test accuracy (10,000 test images unless --quick) of a model trained here.
Prints one markdown table per section and writes runs/bench_distill/<section>.json.

--full: all of Fashion-MNIST; teacher = LeNet-5 (431k params) trained --teacher-epochs (15) with
``dnnzip.train.fit`` (Adam --lr 1e-3, per-step cosine, batch 128), cached in runs/bench_distill/full/.
  kdfull       student (--student: lenet300, lenet5q = quarter-width LeNet-5, mlp30 = 784-30-30-10)
               trained --epochs (20) alone (cross-entropy) or with ``kd_loss_fn`` as ``fit``'s
               ``loss_fn``.
  prunekdfull  prune.channel 70 % of the teacher, then --ft-epochs (3) of fine-tuning, CE vs KD.
Both arms: ``fit`` with the same settings, same init and data order per seed, no early stop
(patience None), best-validation epoch restored. The teacher's logits on the (un-augmented)
training split are computed once (``dnnzip.distill.losses.CachedTeacher``, looked up by input
content) and shared by every KD run; the loss is unchanged. Every T:alpha pair of --kd / --ft-kd
is run on --tune-seed; the pair with the best *validation* accuracy is then run on every --seeds
seed and reported on the test split. Per-run results are cached in
runs/bench_distill/full/runs.json, so an interrupted command resumes where it stopped.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from dnnzip import registry, zoo
from dnnzip.data import load_data
from dnnzip.distill import kd_loss_fn, shift_domain
from dnnzip.registry import Context
from dnnzip.train import TrainSettings, evaluate, finetune, fit

OUT = Path("runs/bench_distill")


def ctx_for(data, seed, epochs, teacher=None, **kw):
    return Context(data=data, teacher=teacher, epochs=epochs, batch_size=128, lr=2e-3,
                   seed=seed, **kw)


def build(widths, seed):
    torch.manual_seed(seed)
    return zoo.build("lenet5", widths=list(widths))


def train_ce(model, data, seed, epochs):
    model = copy.deepcopy(model)
    finetune(model, ctx_for(data, seed, epochs))
    return model


def acc(model, data):
    return evaluate(model, data.test)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def summary(values):
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(title, header, rows):
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def sec_kd(data, teacher, args):
    configs = [tuple(float(v) for v in c.split(":")) for c in args.kd.split(",")]
    res = {"alone": []}
    res.update({f"T={T:g},a={a:g}": [] for T, a in configs})
    for seed in args.seeds:
        init = build((5, 12, 125), seed)
        res["alone"].append(acc(train_ce(init, data, seed, args.epochs), data))
        for T, a in configs:
            kd = registry.apply("distill.kd", init, {"T": T, "alpha": a},
                                ctx_for(data, seed, args.epochs, teacher))
            res[f"T={T:g},a={a:g}"].append(acc(kd, data))
    rows = [["teacher LeNet-5", n_params(teacher), summary([acc(teacher, data)]), ""],
            ["student alone (CE)", n_params(init), summary(res["alone"]), ""]]
    for T, a in configs:
        vals = res[f"T={T:g},a={a:g}"]
        gain = [k - b for k, b in zip(vals, res["alone"])]
        rows.append([f"student + KD (T={T:g}, α={a:g})", n_params(init), summary(vals),
                     f"{100 * statistics.mean(gain):+.2f} (per seed: "
                     + ", ".join(f"{100 * g:+.2f}" for g in gain) + ")"])
    return res, table("KD vs student alone", ["model", "params", "test acc %", "KD gain pt"], rows)


def sec_takd(data, teacher, args):
    res = {"plain_kd": [], "takd": [], "assistant": []}
    for seed in args.seeds:
        init = build((2, 4, 16), seed)
        plain = registry.apply("distill.kd", init, {"T": 4.0, "alpha": 0.9},
                               ctx_for(data, seed, args.epochs, teacher))
        res["plain_kd"].append(acc(plain, data))
        ctx = ctx_for(data, seed, args.epochs, teacher)
        takd = registry.apply("distill.assistant", init, {"steps": 1, "T": 4.0, "alpha": 0.9}, ctx)
        res["takd"].append(acc(takd, data))
        rep = ctx.extra["distill"]["distill.assistant"]["extra"]
        res["assistant"].append(rep["chain"][0]["params"])
    diff = [t - p for t, p in zip(res["takd"], res["plain_kd"])]
    rows = [["plain KD teacher→student", n_params(init), summary(res["plain_kd"]), ""],
            [f"TAKD teacher→assistant ({res['assistant'][0]} params)→student", n_params(init),
             summary(res["takd"]), f"{100 * statistics.mean(diff):+.2f} (per seed: "
             + ", ".join(f"{100 * d:+.2f}" for d in diff) + ")"]]
    return res, table(f"TAKD vs plain KD (teacher {n_params(teacher)} params)",
                      ["run", "student params", "test acc %", "TAKD − KD pt"], rows)


def sec_domain(data, teacher, args):
    target = shift_domain(data, "rotate", severity=45.0, seed=0)
    res = {"source_only": [], "target_ce": [], "domain_kd": [], "teacher_target": [],
           "adapted_teacher_target": []}
    for seed in args.seeds[:args.domain_seeds]:
        init = build((5, 12, 125), seed)
        res["source_only"].append(acc(train_ce(init, data, seed, args.epochs), target))
        res["target_ce"].append(acc(train_ce(init, target, seed, args.epochs), target))
        ctx = ctx_for(data, seed, args.epochs, teacher, extra={"target_data": target})
        T, alpha = (float(v) for v in args.domain_kd.split(":"))
        out = registry.apply("distill.domain", init, {"alpha": alpha, "T": T}, ctx)
        res["domain_kd"].append(acc(out, target))
        rep = ctx.extra["distill"]["distill.domain"]
        res["teacher_target"].append(rep["extra"]["source_teacher_accuracy"])
        res["adapted_teacher_target"].append(rep["teacher_accuracy"])
    rows = [["source-trained teacher (val of target)", summary(res["teacher_target"])],
            ["teacher adapted on source ∪ target (val of target)",
             summary(res["adapted_teacher_target"])],
            ["student, source only (CE)", summary(res["source_only"])],
            ["student, target only (CE, labels)", summary(res["target_ce"])],
            [f"student, cross-domain KD (distill.domain, T:α={args.domain_kd})",
             summary(res["domain_kd"])]]
    return res, table("Domain shift: Fashion-MNIST rotated 45° (acc on the rotated split)",
                      ["model", "acc %"], rows)


def l1_prune_pair(model, layer, nxt, ratio, block=1):
    """Keep the (1 - ratio) output channels of ``layer`` with largest L1 norm; slice ``nxt``."""
    a, b = getattr(model, layer), getattr(model, nxt)
    keep_n = max(1, int(round(a.weight.shape[0] * (1 - ratio))))
    keep = a.weight.detach().abs().flatten(1).sum(1).topk(keep_n).indices.sort().values
    cols = (keep[:, None] * block + torch.arange(block)).flatten()
    with torch.no_grad():
        if isinstance(a, nn.Conv2d):
            new_a = nn.Conv2d(a.in_channels, keep_n, a.kernel_size, a.stride, a.padding)
        else:
            new_a = nn.Linear(a.in_features, keep_n)
        new_a.weight.copy_(a.weight[keep])
        new_a.bias.copy_(a.bias[keep])
        if isinstance(b, nn.Conv2d):
            new_b = nn.Conv2d(keep_n, b.out_channels, b.kernel_size, b.stride, b.padding)
            new_b.weight.copy_(b.weight[:, keep])
        else:
            new_b = nn.Linear(len(cols), b.out_features)
            new_b.weight.copy_(b.weight[:, cols])
        new_b.bias.copy_(b.bias)
    setattr(model, layer, new_a)
    setattr(model, nxt, new_b)


def sec_fskd(data, teacher, args):
    pruned = copy.deepcopy(teacher)
    l1_prune_pair(pruned, "conv1", "conv2", 0.5)
    l1_prune_pair(pruned, "fc1", "fc2", 0.5)
    t_acc, p_acc = acc(teacher, data), acc(pruned, data)
    rows, res = [], {"teacher": t_acc, "pruned": p_acc, "fskd": {}}
    for n in args.fskd_samples:
        ctx = Context(data=data, teacher=teacher, seed=0)
        out = registry.apply("distill.few_sample", pruned, {"samples": n}, ctx)
        a = acc(out, data)
        rec = (a - p_acc) / max(t_acc - p_acc, 1e-9)
        res["fskd"][n] = {"acc": a, "recovered": rec,
                          "aligned": ctx.extra["distill"]["distill.few_sample"]["extra"]["aligned"]}
        rows.append([f"pruned + FSKD, {n} unlabelled samples", n_params(out), f"{100 * a:.2f}",
                     f"{100 * rec:.0f} %"])
    # prune.channel on every layer: only fc2 (10 outputs) keeps its width, so only it is aligned
    allp = registry.apply("prune.channel", teacher, {"ratio": 0.5, "finetune": False},
                          Context(data=data, epochs=0, seed=0))
    a_acc = acc(allp, data)
    ctx = Context(data=data, teacher=teacher, seed=0)
    out = registry.apply("distill.few_sample", allp, {"samples": 500}, ctx)
    b_acc = acc(out, data)
    res["all_layers"] = {"pruned": a_acc, "fskd": b_acc,
                         "aligned": ctx.extra["distill"]["distill.few_sample"]["extra"]["aligned"]}
    rows += [["prune.channel 50 % of every layer, no fine-tune", n_params(allp),
              f"{100 * a_acc:.2f}", "0 %"],
             ["  + FSKD, 500 samples (only fc2 alignable)", n_params(out), f"{100 * b_acc:.2f}",
              f"{100 * (b_acc - a_acc) / max(t_acc - a_acc, 1e-9):.0f} %"]]
    rows = [["teacher LeNet-5", n_params(teacher), f"{100 * t_acc:.2f}", ""],
            ["50 % L1 channel-pruned conv1+fc1, no fine-tune", n_params(pruned),
             f"{100 * p_acc:.2f}", "0 %"]] + rows
    return res, table("FSKD after 50 % channel pruning",
                      ["model", "params", "test acc %", "share of lost accuracy recovered"], rows)


def sec_prunekd(data, teacher, args):
    pctx = Context(data=data, epochs=0, seed=0)
    pruned = registry.apply("prune.channel", teacher, {"ratio": 0.7, "finetune": False}, pctx)
    T, alpha = (float(v) for v in args.ft_kd.split(":"))
    res = {"pruned": acc(pruned, data), "ce": [], "kd": [], "T": T, "alpha": alpha}
    for seed in args.seeds:
        ce = copy.deepcopy(pruned)
        finetune(ce, ctx_for(data, seed, args.ft_epochs))
        res["ce"].append(acc(ce, data))
        kd = copy.deepcopy(pruned)
        finetune(kd, ctx_for(data, seed, args.ft_epochs),
                 loss_fn=kd_loss_fn(teacher, T=T, alpha=alpha))
        res["kd"].append(acc(kd, data))
    gain = [k - c for k, c in zip(res["kd"], res["ce"])]
    rows = [["teacher", n_params(teacher), f"{100 * acc(teacher, data):.2f}", ""],
            ["70 % channel-pruned, no fine-tune", n_params(pruned), f"{100 * res['pruned']:.2f}", ""],
            [f"+ fine-tune CE ({args.ft_epochs} ep)", n_params(pruned), summary(res["ce"]), ""],
            [f"+ fine-tune KD ({args.ft_epochs} ep, T={T:g}, α={alpha:g})", n_params(pruned),
             summary(res["kd"]),
             f"{100 * statistics.mean(gain):+.2f} (per seed: "
             + ", ".join(f"{100 * g:+.2f}" for g in gain) + ")"]]
    return res, table("KD as the fine-tuning loss after 70 % channel pruning",
                      ["model", "params", "test acc %", "KD − CE pt"], rows)


def sec_private(data, teacher, args):
    res = {}
    init = build((5, 12, 125), 0)
    for eps in args.epsilons:
        ctx = ctx_for(data, 0, args.epochs, teacher)
        # eps <= 0: the no-noise reference through the same loop (sigma ~ 1e-11)
        out = registry.apply("distill.private", init, {"mechanism": "gaussian", "T": 4.0,
                             "epsilon": eps if eps > 0 else 1e12, "alpha": 0.9}, ctx)
        rep = ctx.extra["distill"]["distill.private"]["extra"]
        res[f"{eps:g}" if eps > 0 else "∞ (no noise)"] = {"acc": acc(out, data),
                                                          "sigma": rep["noise_scale"]}
    rows = [[k, f"{v['sigma']:.3g}", f"{100 * v['acc']:.2f}"] for k, v in res.items()]
    return res, table("RONA-style private KD: Gaussian noise on the released soft targets "
                      "(δ=1e-5, per released vector, α=0.9)", ["ε", "noise σ", "test acc %"], rows)


SECTIONS = {"kd": sec_kd, "takd": sec_takd, "domain": sec_domain, "fskd": sec_fskd,
            "prunekd": sec_prunekd, "private": sec_private}


# ------------------------------------------------------------------ full scale (--full)
FULL = OUT / "full"
STUDENTS = {  # name -> (zoo model, kwargs)
    "lenet300": ("lenet300", {}),
    "lenet5q": ("lenet5", {"widths": [5, 12, 125]}),
    "mlp30": ("lenet300", {"hidden": [30, 30]}),
}


def full_settings(args, seed, epochs):
    return TrainSettings(epochs=epochs, batch_size=128, lr=args.lr, seed=seed, patience=None,
                         progress=False, threads=1)


def full_teacher(data, args):
    path = FULL / f"teacher_lenet5_e{args.teacher_epochs}_lr{args.lr:g}.pt"
    torch.manual_seed(100)
    teacher = zoo.build("lenet5")
    if path.is_file():
        teacher.load_state_dict(torch.load(path, weights_only=True))
        teacher.eval()
        return teacher, None
    res = fit(teacher, data, full_settings(args, 100, args.teacher_epochs))
    torch.save(teacher.state_dict(), path)
    return teacher, res


class RunCache:
    """runs.json: one entry per trained student, keyed by everything that defines the run."""

    def __init__(self, path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key, make):
        if key not in self.data:
            self.data[key] = make()
            tmp = self.path.with_suffix(".part")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)
            print(f"  {key}: val {100 * self.data[key]['val']:.2f}, test "
                  f"{100 * self.data[key]['test']:.2f} ({self.data[key]['seconds']:.0f} s)",
                  flush=True)
        return self.data[key]


def full_run(data, init, args, seed, epochs, teacher=None, T=None, alpha=None):
    """Train a copy of ``init`` with fit (CE, or KD from ``teacher`` when T is given)."""
    student = copy.deepcopy(init)
    loss = None if T is None else kd_loss_fn(teacher, T=T, alpha=alpha)
    t = time.perf_counter()
    res = fit(student, data, full_settings(args, seed, epochs), loss_fn=loss)
    out = {"val": res.best_val_score, "test": evaluate(student, data.test),
           "best_epoch": res.best_epoch, "seconds": time.perf_counter() - t,
           "params": n_params(student),
           "val_curve": [round(h.val_score, 4) for h in res.history]}
    if loss is not None and hasattr(loss.teacher, "misses"):
        out["teacher_cache_misses"] = loss.teacher.misses
    return out


def paired(data, teacher, args, *, tag, make_init, epochs, kd, title, alone_name):
    """Sweep the T:alpha pairs of ``kd`` on --tune-seed, choose on validation, run all seeds.

    ``make_init(seed)`` gives the starting model of both arms (same init per seed)."""
    from dnnzip.distill.losses import CachedTeacher
    runs = RunCache(FULL / "runs.json")
    tag = f"{tag}|e{epochs}|lr{args.lr:g}|teacher_e{args.teacher_epochs}"
    shared = {}  # one CachedTeacher for every KD run: the logits do not depend on T or alpha

    def cached():
        if "t" not in shared:
            shared["t"] = CachedTeacher(teacher, data.train)
        return shared["t"]

    def run(seed, cfg):
        if cfg is None:
            return runs.get(f"{tag}|alone|s{seed}",
                            lambda: full_run(data, make_init(seed), args, seed, epochs))
        T, a = cfg
        return runs.get(f"{tag}|kd T={T:g} a={a:g}|s{seed}", lambda: full_run(
            data, make_init(seed), args, seed, epochs, cached(), T, a))

    configs = [tuple(float(v) for v in c.split(":")) for c in kd.split(",")]
    ts = args.tune_seed
    base = run(ts, None)
    sweep = [(cfg, run(ts, cfg)) for cfg in configs]
    best_cfg, _ = max(sweep, key=lambda cr: cr[1]["val"])  # first of equals wins
    rows = [[f"{alone_name}", f"{100 * base['val']:.2f}", f"{100 * base['test']:.2f}", ""]]
    rows += [[f"KD T={T:g}, α={a:g}" + (" ← chosen" if (T, a) == best_cfg else ""),
              f"{100 * r['val']:.2f}", f"{100 * r['test']:.2f}",
              f"{100 * (r['val'] - base['val']):+.2f}"] for (T, a), r in sweep]
    md = table(f"{title}: sweep on seed {ts}, {epochs} epochs (choice by validation accuracy)",
               ["run", "val acc %", "test acc %", "val gain pt"], rows)
    alone = [run(s, None) for s in args.seeds]
    kd_runs = [run(s, best_cfg) for s in args.seeds]
    gain = [k["test"] - b["test"] for k, b in zip(kd_runs, alone)]
    T, a = best_cfg
    gain_txt = (f"{100 * statistics.mean(gain):+.2f} ± {100 * statistics.stdev(gain):.2f} "
                "(per seed: " + ", ".join(f"{100 * g:+.2f}" for g in gain) + ")"
                if len(gain) > 1 else f"{100 * gain[0]:+.2f}")
    rows = [["teacher LeNet-5", n_params(teacher), f"{100 * evaluate(teacher, data.test):.2f}", ""],
            [alone_name, alone[0]["params"], summary([r["test"] for r in alone]), ""],
            [f"KD (T={T:g}, α={a:g})", kd_runs[0]["params"],
             summary([r["test"] for r in kd_runs]), gain_txt]]
    md += "\n\n" + table(f"{title}: seeds {args.seeds}, test split (10,000 images)",
                           ["model", "params", "test acc %", "KD gain pt"], rows)
    res = {"sweep": {f"T={T_:g},a={a_:g}": r for (T_, a_), r in sweep}, "alone": alone,
           "kd": kd_runs, "chosen": {"T": T, "alpha": a}, "gain": gain}
    return res, md


def sec_kdfull(data, teacher, args):
    model_name, kw = STUDENTS[args.student]

    def make_init(seed):
        torch.manual_seed(seed)
        return zoo.build(model_name, **kw)

    return paired(data, teacher, args, tag=args.student, make_init=make_init, epochs=args.epochs,
                  kd=args.kd, title=f"Hinton KD, {args.student} student",
                  alone_name=f"{args.student} alone (CE)")


def sec_prunekdfull(data, teacher, args):
    pruned = registry.apply("prune.channel", teacher, {"ratio": 0.7, "finetune": False},
                            Context(data=data, epochs=0, seed=0))
    res, md = paired(data, teacher, args, tag="prune0.7", make_init=lambda seed: pruned,
                     epochs=args.ft_epochs, kd=args.ft_kd,
                     title="KD vs CE fine-tuning after 70 % channel pruning",
                     alone_name="fine-tune CE")
    res["pruned_no_ft"] = evaluate(pruned, data.test)
    md += (f"\n\n70 % channel-pruned teacher before fine-tuning: {n_params(pruned)} params, "
           f"{100 * res['pruned_no_ft']:.2f} % test")
    return res, md


FULL_SECTIONS = {"kdfull": sec_kdfull, "prunekdfull": sec_prunekdfull}


def main_full(args):
    FULL.mkdir(parents=True, exist_ok=True)
    data = load_data("fashion-mnist", seed=0)
    t0 = time.perf_counter()
    teacher, tres = full_teacher(data, args)
    extra = f", trained in {tres.seconds:.0f} s" if tres is not None else " (cached)"
    print(f"teacher LeNet-5: test {100 * evaluate(teacher, data.test):.2f} %{extra}", flush=True)
    for name in args.sections.split(","):
        t = time.perf_counter()
        res, md = FULL_SECTIONS[name](data, teacher, args)
        secs = time.perf_counter() - t
        suffix = f"{args.student}_e{args.epochs}" if name == "kdfull" else f"e{args.ft_epochs}"
        (FULL / f"{name}_{suffix}.json").write_text(json.dumps(
            {"result": res, "seconds": secs, "args": vars(args)}, indent=1))
        print(md + f"\n\n({name}: {secs:.0f} s, total {time.perf_counter() - t0:.0f} s)\n",
              flush=True)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny budget smoke run")
    p.add_argument("--sections", default=None,
                   help=f"reduced: {','.join(SECTIONS)} (all); --full: kdfull (or prunekdfull)")
    p.add_argument("--limit", type=int, default=8000, help="train pool size (test: full 10k)")
    p.add_argument("--full", action="store_true",
                   help="full-scale Hinton KD benchmark (section kdfull, see the docstring)")
    p.add_argument("--student", default="lenet300", choices=sorted(STUDENTS),
                   help="--full: the student model")
    p.add_argument("--tune-seed", type=int, default=0, help="--full: seed of the T/alpha sweep")
    p.add_argument("--lr", type=float, default=1e-3, help="--full: Adam learning rate")
    p.add_argument("--epochs", type=int, default=None, help="student epochs (4; --full: 20)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="(4; --full: 15)")
    p.add_argument("--ft-epochs", type=int, default=None, help="(2; --full: 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--domain-seeds", type=int, default=1)
    p.add_argument("--kd", default="4:0.9", help="T:alpha pairs for the kd section, comma-separated")
    p.add_argument("--ft-kd", default="4:0.9", help="T:alpha of the prunekd KD fine-tune")
    p.add_argument("--domain-kd", default="4:0.9", help="T:alpha of the domain student's KD")
    p.add_argument("--epsilons", type=float, nargs="+", default=[0, 100, 10, 1, 0.1])
    p.add_argument("--fskd-samples", type=int, nargs="+", default=[100, 500])
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.epochs is None:
        args.epochs = 20 if args.full else 4
    if args.teacher_epochs is None:
        args.teacher_epochs = 15 if args.full else 4
    if args.ft_epochs is None:
        args.ft_epochs = 3 if args.full else 2
    if args.sections is None:
        args.sections = "kdfull" if args.full else ",".join(SECTIONS)
    if args.full:
        for opt in ("kd", "ft_kd"):
            if getattr(args, opt) == p.get_default(opt):
                setattr(args, opt, "2:0.5,4:0.5,4:0.7,4:0.9,8:0.7,8:0.9,16:0.9")
        return main_full(args)
    if args.quick:
        args.limit, args.epochs, args.teacher_epochs, args.ft_epochs = 1500, 1, 1, 1
        args.seeds, args.fskd_samples = [0], [200]
    data = load_data("fashion-mnist", seed=0, limit=args.limit)
    if args.quick:
        data = data.limit(1500)
    out_dir = OUT / "quick" if args.quick else OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache = OUT / f"teacher_l{args.limit}_e{args.teacher_epochs}{'_quick' if args.quick else ''}.pt"
    teacher = build((20, 50, 500), 100)
    if cache.is_file():  # same data and budget: reuse the teacher of an earlier section run
        teacher.load_state_dict(torch.load(cache, weights_only=True))
        teacher.eval()
    else:
        teacher = train_ce(teacher, data, 100, args.teacher_epochs)
        torch.save(teacher.state_dict(), cache)
    print(f"teacher: {100 * acc(teacher, data):.2f} % in {time.perf_counter() - t0:.0f} s")
    for name in args.sections.split(","):
        t = time.perf_counter()
        res, md = SECTIONS[name](data, teacher, args)
        secs = time.perf_counter() - t
        tag = {"kd": args.kd, "prunekd": args.ft_kd, "domain": args.domain_kd}.get(name, "").replace(":", "_").replace(",", "+")
        (out_dir / f"{name}{'_' + tag if tag else ''}.json").write_text(json.dumps({"result": res, "seconds": secs,
                                                      "args": vars(args)}, indent=1))
        print(md + f"\n\n({name}: {secs:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
