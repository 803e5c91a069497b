"""``distill.few_sample``: Few Sample Knowledge Distillation, FSKD (Li et al. [63]).

After compression (typically channel pruning of a layer's *inputs*), a student layer's output no
longer matches the teacher's. FSKD appends a 1×1 conv Q (a Linear map for Linear layers) that
maps the student's output to the teacher's, fits Q by least squares on a few hundred unlabelled
samples, and merges it into the preceding layer — W' = Q·W, b' = Q·b + c — so no extra layer
remains and nothing is trained by SGD.

Here every Conv1d/Conv2d/Linear layer of the student that has a same-named, same-typed teacher
layer with the same output width and output shape is aligned, in forward order, each solve using
the student already corrected upstream (the paper's block-by-block order). A ridge term pulls Q
towards the identity so that a few samples cannot produce a wild map:
    min_Q ||S Qᵀ + c - T||² + λ ||Q - I||²,  λ = ridge · tr(SᵀS) / C.
Deviation from [63]: alignment is per matching layer pair rather than per hand-chosen block end,
because the model is arbitrary. What cannot be aligned is skipped and named in the report
(``ctx.extra['distill']['distill.few_sample']['extra']['skipped']``): layers whose output width was
pruned (no channel-to-channel target), grouped/depthwise convs (a dense Q does not merge into
them), masked connection-pruned layers (Q·W would be dense again), layers missing in the teacher,
and outputs of different shape. If nothing is alignable an
``UnsupportedLayerError`` lists the reasons.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range, coerce_tuple
from dnnzip.distill.common import eval_limit, eval_split, limited, resolve_teacher
from dnnzip.distill.kd import check_pair
from dnnzip.distill.report import distill_report, record
from dnnzip.errors import DataError, UnsupportedLayerError
from dnnzip.registry import Context, fresh_copy, technique

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class FewSampleConfig:
    """FSKD least-squares alignment.

    samples: number of unlabelled samples (from calib, else train) used for the solves.
    ridge: strength of the pull towards Q = I, relative to the mean feature energy.
    layers: only align these module names (empty = every alignable layer).
    """

    samples: int = 500
    ridge: float = 1e-3
    layers: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "samples", 1, None, integer=True)
        check_range(self, "ridge", 0.0, None)
        coerce_tuple(self, "layers")


def few_samples(ctx: Context, n: int) -> torch.Tensor:
    data = ctx.data
    split = None
    if data is not None:
        for name in ("calib", "train"):
            candidate = getattr(data, name, None)
            if candidate is not None and len(candidate) > 0:
                split = candidate
                break
    if split is None:
        raise DataError("distill.few_sample: the few-sample set is empty; expected ctx.data with a "
                        "non-empty calib or train split (a few hundred unlabelled inputs).")
    ds = limited(split, n)
    return torch.stack([torch.as_tensor(ds[i][0]) for i in range(len(ds))])


def _output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    store = {}
    handle = layer.register_forward_hook(lambda m, a, out: store.__setitem__("y", out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store["y"]


def _as_rows(y: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """(N·positions, C): channels last, every spatial/time position a row."""
    if isinstance(layer, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    return y.movedim(1, -1).reshape(-1, y.shape[1])


def solve_map(S: torch.Tensor, T: torch.Tensor, ridge: float, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares Q (C×C) and offset c with T ≈ S Qᵀ + c, ridge-regularised towards Q = I."""
    S, T = S.double(), T.double()
    C = S.shape[1]
    A = torch.cat([S, torch.ones(len(S), 1, dtype=S.dtype)], 1) if bias else S
    prior = torch.eye(A.shape[1], C, dtype=S.dtype)
    lam = max(ridge * float((S * S).sum()) / max(C, 1), 1e-12)
    gram = A.T @ A + lam * torch.eye(A.shape[1], dtype=S.dtype)
    M = torch.linalg.solve(gram, A.T @ T + lam * prior)
    Q = M[:C].T
    c = M[C] if bias else torch.zeros(C, dtype=S.dtype)
    return Q, c


def merge_map(layer: nn.Module, Q: torch.Tensor, c: torch.Tensor) -> None:
    """Fold y ↦ Q y + c into ``layer``: W' = Q·W (over output channels), b' = Q·b + c."""
    Q, c = Q.double(), c.double()
    with torch.no_grad():
        W = layer.weight.double()
        layer.weight.copy_(torch.einsum("oc,c...->o...", Q, W).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_((Q @ layer.bias.double() + c).to(layer.bias.dtype))


def _skip_reason(name: str, s: nn.Module, t: nn.Module | None) -> str | None:
    if hasattr(s, "weight_mask"):
        return "masked (connection-pruned) layer: merging a dense map would undo its sparsity"
    if t is None or type(t) is not type(s):
        return "no same-named layer of the same type in the teacher"
    if getattr(s, "groups", 1) != 1:
        return f"grouped conv (groups={s.groups}): a dense 1x1 map cannot be merged into it"
    width = (lambda m: m.out_features if isinstance(m, nn.Linear) else m.out_channels)
    if width(s) != width(t):
        return (f"output width differs (student {width(s)}, teacher {width(t)}): pruned outputs "
                "have no channel-wise target")
    return None


@technique("distill.few_sample", FewSampleConfig)
def apply_few_sample(model: nn.Module, config: FewSampleConfig, ctx: Context) -> nn.Module:
    """Return a copy of the student whose layers are least-squares aligned to the teacher."""
    teacher = resolve_teacher(model, ctx, "distill.few_sample")
    x = few_samples(ctx, config.samples)
    student = fresh_copy(model)
    student.eval()
    check_pair(student, teacher, Context(example_input=x[:8]), "distill.few_sample")
    t_mods = dict(teacher.named_modules())
    aligned, skipped = [], {}
    for name, layer in student.named_modules():
        if not isinstance(layer, _LAYERS) or (config.layers and name not in config.layers):
            continue
        reason = _skip_reason(name, layer, t_mods.get(name))
        if reason is None:
            ys, yt = _output(student, layer, x), _output(teacher, t_mods[name], x)
            if ys.shape != yt.shape:
                reason = f"output shape differs (student {tuple(ys.shape)}, teacher {tuple(yt.shape)})"
        if reason is not None:
            skipped[name] = reason
            continue
        Q, c = solve_map(_as_rows(ys, layer), _as_rows(yt, layer), config.ridge,
                         bias=layer.bias is not None)
        merge_map(layer, Q, c)
        aligned.append(name)
    if not aligned:
        detail = "; ".join(f"'{n}': {r}" for n, r in skipped.items()) or "no Conv/Linear layers"
        raise UnsupportedLayerError(f"distill.few_sample found no layer it can align ({detail}).")
    split = eval_split(ctx.data) if ctx.data is not None else None
    if split is not None:
        record(ctx, "distill.few_sample", distill_report(
            model, student, teacher, split, limit=eval_limit(ctx), aligned=aligned,
            skipped=skipped, samples=len(x)))
    return student
