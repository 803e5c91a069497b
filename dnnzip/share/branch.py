"""A frozen shared backbone with task branches trained one after another (survey Sec. IV-B, [50]).

[50] multiplexes several recognition/prediction tasks on an embedded device with one CNN backbone:
first the backbone is trained (here: the given model, trained on task 0), then it is frozen and
each further task gets its own branch, trained with the backbone fixed. Storage is one backbone
plus small branches instead of one model per task, and the backbone's features are computed once
for all tasks (``MultiHead.forward_all``).

``branch_train`` splits ``model`` after its ``split``-th weight layer (and the activation that
follows); branch 0 is the rest of ``model`` as trained; branch t > 0 is a freshly initialised copy
of that rest, its last Linear sized to task t's classes, trained on task t alone. A Python API
function, not a registered technique: it takes several tasks in.
"""
from __future__ import annotations

import copy

from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.share.multitask import (_ELEMENTWISE, MultiHead, _weighted_indices, assemble,
                                    layers_of)


def split_layers(layers: list[nn.Module], split: int) -> int:
    """Index in ``layers`` where the backbone ends: after weight layer ``split`` and the
    element-wise layers that follow it."""
    idx = _weighted_indices(layers)
    if not 1 <= split < len(idx):
        raise ConfigError(f"The 'split' parameter of branch_train must be an int in "
                          f"[1, {len(idx) - 1}]. Got {split!r} instead.")
    cut = idx[split - 1] + 1
    while cut < len(layers) and isinstance(layers[cut], _ELEMENTWISE):
        cut += 1
    return cut


def fresh_branch(template: list[nn.Module], num_classes: int) -> list[nn.Module]:
    branch = copy.deepcopy(template)
    for m in branch:
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    last = branch[-1]
    if not isinstance(last, nn.Linear):
        raise ConfigError(f"branch_train resizes the branch's last layer per task, which must be "
                          f"a Linear; got {type(last).__name__}")
    if last.out_features != num_classes:
        branch[-1] = nn.Linear(last.in_features, num_classes, bias=last.bias is not None)
    return branch


def branch_train(model: nn.Module, tasks: list, *, split: int, settings) -> tuple[MultiHead, list]:
    """Freeze the first ``split`` weight layers of ``model`` (trained on ``tasks[0]``) as the
    backbone and train one branch per further task, sequentially. ``settings`` is a
    ``dnnzip.train.TrainSettings`` for each branch. Returns the MultiHead and one row per task
    (test accuracy, parameters of its branch)."""
    from dnnzip.train import evaluate, fit

    if len(tasks) < 2:
        raise ConfigError("branch_train needs at least two tasks (tasks[0] trained the backbone)")
    example = tasks[0].example_input(2)
    layers = layers_of(model, example)
    cut = split_layers(layers, split)
    backbone = nn.Sequential(*layers[:cut])
    for p in backbone.parameters():
        p.requires_grad_(False)
    heads = [layers[cut:]]
    for t in tasks[1:]:
        branch = fresh_branch(layers[cut:], t.num_classes)
        net = nn.Sequential(backbone, *branch)
        fit(net, t, settings)  # only the branch has trainable parameters
        heads.append(branch)
    backbone.eval()
    multi = assemble(list(backbone), heads, model)
    for p in multi.trunk.parameters():
        p.requires_grad_(False)
    rows = []
    for i, t in enumerate(tasks):
        rows.append({"task": i, "data": t.name, "accuracy": evaluate(multi.for_task(i), t.test),
                     "branch_params": sum(p.numel() for p in multi.heads[i].parameters())})
    return multi, rows


__all__ = ["branch_train", "split_layers", "fresh_branch"]
