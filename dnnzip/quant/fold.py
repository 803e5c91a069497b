"""Graph facts quantization needs, and BatchNorm folding (Jacob et al. 2018, Sec. 3.2).

Folding: a BatchNorm ``y = g (x - mu) / sqrt(var + eps) + b`` that directly follows a Conv/Linear
whose output has no other user is merged into that layer's weights and bias
(``w' = w g / sigma``, ``b' = (b - mu) g / sigma + beta``), and the BatchNorm becomes Identity, so
the folded weights are what gets quantized, as on an integer-only target.

The graph comes from ``torch.fx``; a model fx cannot trace falls back to the adjacency of
children inside ``nn.Sequential`` containers.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import nn

QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_TRANSPARENT_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_TRANSPARENT_FUNCS = {torch.flatten, torch.nn.functional.max_pool2d,
                      torch.nn.functional.max_pool1d, torch.nn.functional.dropout,
                      operator.getitem}
_TRANSPARENT_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze"}
_RELU_FUNCS = {torch.relu, torch.nn.functional.relu}


@dataclass
class GraphFacts:
    """bn_after[layer] = BN that follows it; relu_after[layer] = ReLU module name ("" for a
    functional relu); producer[layer] = quantized layer whose (post-ReLU) output reaches it
    through value-preserving ops only (so they can share one activation quantizer)."""

    bn_after: dict[str, str] = field(default_factory=dict)
    relu_after: dict[str, str] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)


def analyze(model: nn.Module) -> GraphFacts:
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # untraceable model: only Sequential adjacency is known
        return _sequential_facts(model)
    mods = dict(model.named_modules())
    facts = GraphFacts()

    def is_mod(node, types):
        return node.op == "call_module" and isinstance(mods.get(node.target), types)

    def is_relu(node):
        return is_mod(node, nn.ReLU) or (node.op == "call_function" and node.target in _RELU_FUNCS)

    def transparent(node):
        return (is_mod(node, _TRANSPARENT_MODULES)
                or (node.op == "call_function" and node.target in _TRANSPARENT_FUNCS)
                or (node.op == "call_method" and node.target in _TRANSPARENT_METHODS))

    out_node: dict[str, torch.fx.Node] = {}  # layer -> node holding its final (post-relu) value
    for node in gm.graph.nodes:
        if not is_mod(node, QUANTIZABLE):
            continue
        cur = node
        users = list(cur.users)
        if len(users) == 1 and is_mod(users[0], _BN):
            facts.bn_after[node.target] = users[0].target
            cur = users[0]
            users = list(cur.users)
        if len(users) == 1 and is_relu(users[0]):
            facts.relu_after[node.target] = users[0].target if users[0].op == "call_module" else ""
            cur = users[0]
        out_node[node.target] = cur
    by_value = {n: name for name, n in out_node.items()}
    for node in gm.graph.nodes:
        if not is_mod(node, QUANTIZABLE) or not node.args:
            continue
        src = node.args[0]
        while isinstance(src, torch.fx.Node) and src not in by_value and transparent(src):
            if len(src.users) != 1 or not src.args:
                break
            src = src.args[0]
        if isinstance(src, torch.fx.Node) and src in by_value and len(src.users) == 1:
            facts.producer[node.target] = by_value[src]
    return facts


def _sequential_facts(model: nn.Module) -> GraphFacts:
    facts = GraphFacts()
    for prefix, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        names = [f"{prefix}.{n}" if prefix else n for n, _ in mod.named_children()]
        kids = list(mod.children())
        for i, child in enumerate(kids):
            if not isinstance(child, QUANTIZABLE):
                continue
            j = i + 1
            if j < len(kids) and isinstance(kids[j], _BN):
                facts.bn_after[names[i]] = names[j]
                j += 1
            if j < len(kids) and isinstance(kids[j], nn.ReLU):
                facts.relu_after[names[i]] = names[j]
    return facts


def fold_batchnorm(model: nn.Module, facts: GraphFacts) -> list[str]:
    """Fold each BN of ``facts.bn_after`` into its layer, in place; returns the folded layers."""
    mods = dict(model.named_modules())
    done = []
    for layer_name, bn_name in facts.bn_after.items():
        layer, bn = mods[layer_name], mods[bn_name]
        if not bn.track_running_stats or bn.running_var is None:
            continue
        with torch.no_grad():
            sigma = torch.sqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(sigma)
            beta = bn.bias if bn.affine else torch.zeros_like(sigma)
            factor = gamma / sigma
            w = layer.weight * factor.reshape([-1] + [1] * (layer.weight.dim() - 1))
            b = layer.bias if layer.bias is not None else torch.zeros_like(sigma)
            b = (b - bn.running_mean) * factor + beta
            layer.weight = nn.Parameter(w)
            layer.bias = nn.Parameter(b)
        _replace(model, bn_name, nn.Identity())
        done.append(layer_name)
    return done


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
