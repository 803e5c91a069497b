"""Cross-model weight sharing: Multi-Task Zipping and jointly trained shared hidden layers.

- ``mtz_merge`` — MTZ (He, Zhou & Thiele, NeurIPS 2018 [43]; survey Sec. III-C/IV-C, Table II):
  two models of the same architecture trained on related tasks are "zipped" layer by layer. In
  each trunk layer the neurons of model B are paired with those of model A whose incoming weight
  vectors are closest (a one-to-one assignment, Hungarian algorithm), each pair is merged into one
  shared neuron, and B's next layer is permuted to follow the pairing, so the next layer's incoming
  vectors are comparable again. Deviations from MTZ, for simplicity and because they keep a plain
  "shared trunk + per-task heads" structure: (1) the first ``shared_layers`` weight layers are
  merged completely (MTZ merges, per layer, only as many pairs as its error budget allows);
  (2) MTZ merges with the inverse layer Hessians, w = (H_a + H_b)^-1 (H_a w_a + H_b w_b); here
  H is approximated by its diagonal, the second moment E[x_j²] of each input j of the layer on
  each model's own task data (the diagonal of a linear layer's Hessian E[x xᵀ]), so the merge is
  a per-input weighted average — without data it is the plain average; (3) the error increase
  that MTZ minimises is measured, not predicted: ``auto_share`` picks the deepest trunk whose
  merged model stays within ``max_drop`` on each task's validation split after the short joint
  fine-tune.
- ``train_multitask`` — the multitask objective of [52] (survey Eq. 14): min over the shared and
  task parameters of Σ_i L(f_i(x^i; θ_s, θ_i), y^i), each step summing one batch of every task.

Both return a ``MultiHead`` (registered spec module): ``trunk`` (Sequential) and ``heads``
(ModuleList of Sequentials); ``forward(x)`` runs task ``task`` (attribute, default 0) and
``forward_all(x)`` every head. These are Python API functions, not registered techniques: they
take several models and tasks in, which the single-model technique contract does not allow.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.nn.spec import spec_module
from dnnzip.share.multiplex import structure_ref

_WEIGHTED = (nn.Linear, nn.Conv2d)
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.Identity, nn.Dropout,
                nn.MaxPool2d, nn.AvgPool2d, nn.Flatten)


@spec_module("share.MultiHead")
class MultiHead(nn.Module):
    """A shared trunk with one head per task; ``task`` selects what ``forward`` returns."""

    def __init__(self, num_tasks: int = 2, task: int = 0):
        super().__init__()
        self.num_tasks, self.task = int(num_tasks), int(task)
        self.trunk = nn.Sequential()
        self.heads = nn.ModuleList()

    def spec_kwargs(self) -> dict:
        return {"num_tasks": self.num_tasks, "task": self.task}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads[self.task](self.trunk(x))

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.trunk(x)
        return [head(h) for head in self.heads]

    def for_task(self, task: int) -> "MultiHead":
        """A copy whose ``forward`` answers ``task`` (e.g. to evaluate or export one task)."""
        if not 0 <= task < self.num_tasks:
            raise ConfigError(f"MultiHead has tasks 0..{self.num_tasks - 1}; got task={task}")
        other = copy.deepcopy(self)
        other.task = task
        return other


def assemble(trunk: list[nn.Module], heads: list[list[nn.Module]], ref_model: nn.Module,
             task: int = 0) -> MultiHead:
    m = MultiHead(len(heads), task)
    m.trunk = nn.Sequential(*trunk)
    m.heads = nn.ModuleList(nn.Sequential(*h) for h in heads)
    m._dnnzip_ref = structure_ref(ref_model)
    return m.eval()


def layers_of(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The model's children as a sequence (a Flatten inserted before the first Linear after a
    conv stack), checked to compute exactly what ``model`` computes."""
    out, h = [], example
    for name, child in model.named_children():
        if not isinstance(child, _WEIGHTED + _ELEMENTWISE):
            raise UnsupportedLayerError(
                f"'{name}' ({type(child).__name__}): share.multitask zips chains of "
                "Linear/Conv2d and element-wise layers only; BatchNorm, RNNs and branches are "
                "not handled")
        if isinstance(child, nn.Linear) and h.dim() > 2:
            out.append(nn.Flatten())
            h = h.flatten(1)
        out.append(copy.deepcopy(child))
        h = child(h)
    with torch.no_grad():
        ok = torch.allclose(nn.Sequential(*out).eval()(example), model.eval()(example), atol=1e-5)
    if not ok:
        raise UnsupportedLayerError(f"{type(model).__name__}'s forward is not the chain of its "
                                    "children; share.multitask needs a sequential model")
    return out


def _weighted_indices(layers: list[nn.Module]) -> list[int]:
    return [i for i, m in enumerate(layers) if isinstance(m, _WEIGHTED)]


@torch.no_grad()
def _input_moments(layers: list[nn.Module], data: Dataset | None, n: int = 512) -> list:
    """E[x_j²] of each weighted layer's input (per input channel/feature), or None per layer."""
    idx = _weighted_indices(layers)
    if data is None:
        return [None] * len(layers)
    x = torch.stack([data[i][0] for i in range(min(n, len(data)))])
    out = [None] * len(layers)
    for i, m in enumerate(layers):
        if i in idx:
            dims = [d for d in range(x.dim()) if d != 1]
            out[i] = (x ** 2).mean(dims) + 1e-8
        x = m(x)
    return out


def _permute_out(m: nn.Module, perm: torch.Tensor) -> None:
    m.weight.data = m.weight.data[perm]
    if m.bias is not None:
        m.bias.data = m.bias.data[perm]


def _input_perm(m: nn.Module, perm: torch.Tensor, channels: int) -> torch.Tensor:
    """The permutation of ``m``'s inputs that follows a permutation of the previous outputs."""
    cols = m.weight.shape[1]
    if cols == channels:
        return perm
    per = cols // channels  # a Linear after Flatten of C x H x W: each channel owns a block
    return (perm[:, None] * per + torch.arange(per)[None, :]).reshape(-1)


@torch.no_grad()
def mtz_merge(model_a: nn.Module, model_b: nn.Module, *, shared_layers: int,
              example: torch.Tensor, data_a: Dataset | None = None,
              data_b: Dataset | None = None) -> tuple[MultiHead, list[dict]]:
    """Zip the first ``shared_layers`` weight layers of two same-architecture models.

    Returns the MultiHead (task 0 = model_a, task 1 = model_b) and, per merged layer, the mean
    distance between paired incoming weight vectors before merging (what MTZ keeps small).
    """
    from scipy.optimize import linear_sum_assignment

    la, lb = layers_of(model_a, example), layers_of(model_b, example)
    if [type(m) for m in la] != [type(m) for m in lb] or any(
            a.weight.shape != b.weight.shape for a, b in zip(la, lb) if isinstance(a, _WEIGHTED)):
        raise ConfigError("mtz_merge needs two models of the same architecture "
                          f"({type(model_a).__name__} vs {type(model_b).__name__} differ)")
    idx = _weighted_indices(la)
    if not 1 <= shared_layers < len(idx):
        raise ConfigError(f"The 'shared_layers' parameter of mtz_merge must be an int in "
                          f"[1, {len(idx) - 1}] (the last layer stays per task). "
                          f"Got {shared_layers!r} instead.")
    ha, hb = _input_moments(la, data_a), _input_moments(lb, data_b)
    stats = []
    for k, i in enumerate(idx[:shared_layers]):
        a, b = la[i], lb[i]
        va = torch.cat([a.weight.flatten(1), a.bias[:, None]], 1) if a.bias is not None \
            else a.weight.flatten(1)
        vb = torch.cat([b.weight.flatten(1), b.bias[:, None]], 1) if b.bias is not None \
            else b.weight.flatten(1)
        cost = torch.cdist(va, vb).numpy()
        rows, cols = linear_sum_assignment(cost)
        perm = torch.from_numpy(cols[np.argsort(rows)]).long()  # B neuron paired with A neuron r
        stats.append({"layer": k, "neurons": len(perm),
                      "pair_distance": float(cost[rows, cols].mean()),
                      "weight_norm": float(va.norm(dim=1).mean())})
        _permute_out(b, perm)
        nxt = idx[k + 1]
        cols = _input_perm(lb[nxt], perm, a.weight.shape[0])
        lb[nxt].weight.data = lb[nxt].weight.data[:, cols]
        if hb[nxt] is not None:  # B's input moments follow its permuted inputs
            hb[nxt] = hb[nxt][cols]
        if ha[i] is not None and hb[i] is not None:  # diagonal-Hessian weighted average
            shape = [1, -1] + [1] * (a.weight.dim() - 2)
            wa, wb = ha[i].view(shape), hb[i].view(shape)
            a.weight.data = (wa * a.weight + wb * b.weight) / (wa + wb)
        else:
            a.weight.data = (a.weight + b.weight) / 2
        if a.bias is not None:
            a.bias.data = (a.bias + b.bias) / 2
    cut = idx[shared_layers - 1] + 1
    while cut < len(la) and isinstance(la[cut], _ELEMENTWISE):  # activation belongs to the trunk
        cut += 1
    return assemble(la[:cut], [la[cut:], lb[cut:]], model_a), stats


def train_multitask(model: MultiHead, tasks: list, *, epochs: int = 1, lr: float = 1e-3,
                    batch_size: int = 64, max_batches: int | None = None, seed: int = 0,
                    train_trunk: bool = True) -> MultiHead:
    """Minimise Σ_i L(head_i(trunk(x^i)), y^i) (survey Eq. 14, [52]) in place; ``tasks`` are
    DataBundles, one per head. ``train_trunk=False`` trains the heads only."""
    if len(tasks) != model.num_tasks:
        raise ConfigError(f"train_multitask got {len(tasks)} tasks for a MultiHead with "
                          f"{model.num_tasks} heads")
    params = list(model.heads.parameters()) + (list(model.trunk.parameters()) if train_trunk
                                               else [])
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for epoch in range(epochs):
        loaders = [t.loader("train", batch_size=batch_size, shuffle=True, seed=seed + epoch)
                   for t in tasks]
        for b, batches in enumerate(zip(*loaders)):
            if max_batches is not None and b >= max_batches:
                break
            loss = sum(F.cross_entropy(model.heads[i](model.trunk(x)), y)
                       for i, (x, y) in enumerate(batches))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def shared_from_scratch(model: nn.Module, tasks: list, *, shared_layers: int,
                        example: torch.Tensor, **train_kw) -> MultiHead:
    """[52]: one architecture, its first ``shared_layers`` weight layers shared by all tasks and
    the rest per task (re-initialised, last layer sized to each task's classes), trained jointly."""
    layers = layers_of(model, example)
    idx = _weighted_indices(layers)
    cut = idx[shared_layers - 1] + 1
    while cut < len(layers) and isinstance(layers[cut], _ELEMENTWISE):
        cut += 1
    for m in layers:  # from scratch: nothing of ``model``'s training is kept
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    heads = []
    for t in tasks:
        head = copy.deepcopy(layers[cut:])
        for m in head:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        last = head[-1]
        if isinstance(last, nn.Linear) and last.out_features != t.num_classes:
            head[-1] = nn.Linear(last.in_features, t.num_classes)
        heads.append(head)
    multi = assemble(layers[:cut], heads, model)
    return train_multitask(multi, tasks, **train_kw)


def evaluate_tasks(model: MultiHead, tasks: list, split: str = "test") -> list[float]:
    from dnnzip.train import evaluate
    return [evaluate(model.for_task(i), getattr(t, split)) for i, t in enumerate(tasks)]


def auto_share(model_a: nn.Module, model_b: nn.Module, tasks: list, *, example: torch.Tensor,
               max_drop: float = 0.01, **train_kw) -> tuple[MultiHead, list[dict]]:
    """MTZ's "smallest error increase", measured: zip the deepest trunk whose fine-tuned merge
    loses at most ``max_drop`` validation accuracy on every task (else the shallowest trunk).
    Returns the chosen model and one row per depth tried."""
    from dnnzip.train import evaluate
    base = [evaluate(model_a, tasks[0].val), evaluate(model_b, tasks[1].val)]
    n = len(_weighted_indices(layers_of(model_a, example)))
    rows, best = [], None
    for depth in range(n - 1, 0, -1):
        multi, _ = mtz_merge(model_a, model_b, shared_layers=depth, example=example,
                             data_a=tasks[0].train, data_b=tasks[1].train)
        train_multitask(multi, tasks, **train_kw)
        acc = evaluate_tasks(multi, tasks, "val")
        rows.append({"shared_layers": depth, "val_accuracy": acc,
                     "drop": [b - a for a, b in zip(acc, base)]})
        best = multi
        if all(b - a <= max_drop for a, b in zip(acc, base)):
            break
    return best, rows


__all__ = ["MultiHead", "mtz_merge", "train_multitask", "shared_from_scratch", "auto_share",
           "evaluate_tasks", "layers_of"]
