"""Coupled channels: Torch-Pruning's dependency graph, with dnnzip's rules and checks around it.

A *group* is one set of channels that must be removed together: a layer's output channels plus
everything they touch (BatchNorm, the next layers' input channels, residual adds, concatenations,
depthwise convs, flattens). Torch-Pruning finds the groups by tracing autograd; dnnzip adds:

- a rule for GRU/LSTM hidden units (``dnnzip.prune.rnn``), and an opaque stand-in for the RNN
  while tracing (on CPU PyTorch unrolls RNNs into gate ops, which Torch-Pruning would misread);
- rules for connection-pruned ``prune.Masked*`` layers (their ``weight_mask`` is pruned too);
- groups that reach the model output are never pruned (the output shape is kept);
- channel shuffles (``dnnzip.prune.shuffle``): one opaque node while tracing, indices mapped
  across the permutation, and each group's ``layout`` says which channel sets may go together
  (whole shuffle positions, equal losses in every conv group of a grouped conv);
- a named ``UnsupportedLayerError`` for a layer with parameters and no rule, and for a model
  that cannot be traced.

``register_rule(cls, pruner)`` adds a rule (a Torch-Pruning ``BasePruningFunc``) for a class;
``register_shuffle(cls)`` declares a channel-shuffle layer; ``register_barrier(cls)`` a layer
whose channels cannot be followed (groups touching it are left unpruned).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf

from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.prune._util import matches
from dnnzip.prune.masked import MaskedConv1d, MaskedConv2d, MaskedLinear
from dnnzip.prune.rnn import RNN_TYPES, RNNHiddenPruner, check_rnn
from dnnzip.prune.shuffle import (GroupedConvPruner, Layout, ShufflePruner, opaque_shuffles,
                                  shuffle_types, wire)

_BUILTIN = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear,
            nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
            nn.InstanceNorm1d, nn.InstanceNorm2d, nn.PReLU, nn.Embedding)


class _MaskedMixin:
    """Prune ``weight_mask`` together with ``weight`` (same dims)."""

    def prune_out_channels(self, layer, idxs):
        keep = [i for i in range(layer.weight_mask.shape[0]) if i not in set(idxs)]
        super().prune_out_channels(layer, idxs)
        layer.weight_mask = layer.weight_mask[keep].clone()
        return layer

    def prune_in_channels(self, layer, idxs):
        keep = [i for i in range(layer.weight_mask.shape[1]) if i not in set(idxs)]
        super().prune_in_channels(layer, idxs)
        layer.weight_mask = layer.weight_mask[:, keep].clone()
        return layer


class _MaskedLinearPruner(_MaskedMixin, tpf.LinearPruner):
    TARGET_MODULES = (MaskedLinear,)


class _MaskedConvPruner(_MaskedMixin, tpf.ConvPruner):
    TARGET_MODULES = (MaskedConv1d, MaskedConv2d)


_RNN_RULE = RNNHiddenPruner()
_RULES: dict[type, tpf.BasePruningFunc] = {
    nn.GRU: _RNN_RULE, nn.LSTM: _RNN_RULE,
    MaskedLinear: _MaskedLinearPruner(), MaskedConv1d: _MaskedConvPruner(),
    MaskedConv2d: _MaskedConvPruner(),
}


class _Barrier(tpf.BasePruningFunc):
    """A layer that mixes channels in a way the graph cannot follow: it joins the groups it
    touches, and those groups are left unpruned."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer, idxs):
        raise UnsupportedLayerError(f"{type(layer).__name__} is a pruning barrier")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        return None

    def get_in_channels(self, layer):
        return None


_BARRIERS: set[type] = set()


def register_barrier(cls: type) -> None:
    """Channels cannot be traced through ``cls``: groups touching it are kept."""
    _BARRIERS.add(cls)


def register_rule(cls: type, pruner: tpf.BasePruningFunc) -> None:
    """Teach channel pruning a layer class: ``pruner`` implements prune_out/in_channels."""
    _RULES[cls] = pruner


@dataclass
class Group:
    """One set of coupled channels, rooted at a layer's output channels."""

    name: str                 # the root layer's module name
    root: nn.Module
    handler: Callable
    size: int                 # number of channels in the group
    items: Any                # Torch-Pruning group with every channel (for scoring)
    members: list[str]        # names of every layer the group touches
    layout: Layout | None = None  # which channel sets may be removed (grouped convs, shuffles)

    def deps(self):
        """(module, is_output_side, idxs, root_idxs) of every parametrised layer in the group."""
        out = []
        for it in self.items:
            m = it.dep.target.module
            if isinstance(m, nn.Module) and any(True for _ in m.parameters(recurse=False)):
                is_out = it.dep.handler.__name__ == "prune_out_channels"
                out.append((m, is_out, list(it.idxs), list(it.root_idxs)))
        return out


class _Link(torch.autograd.Function):
    """Identity on ``y`` whose autograd parents are ``x`` (and the RNN weight ``w``): one opaque
    node per RNN while tracing."""

    @staticmethod
    def forward(ctx, x, y, w):
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        return None, None, None


@contextlib.contextmanager
def _opaque_rnns(model: nn.Module):
    patched = []

    def make(m, orig):
        def fwd(x, hx=None):
            with torch.no_grad():
                out, h = orig(x, hx)
            w = m.weight_ih_l0  # keeps the node in the graph when x needs no gradient
            out = _Link.apply(x, out, w)
            h = (tuple(_Link.apply(out, t, w) for t in h) if isinstance(h, tuple)
                 else _Link.apply(out, h, w))
            return out, h
        return fwd

    for m in model.modules():
        if isinstance(m, RNN_TYPES):
            m.forward = make(m, m.forward)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _has_rule(m: nn.Module) -> bool:
    # heads need the head-aware rule of prune.heads; a layer may also opt out explicitly
    if isinstance(m, nn.MultiheadAttention) or getattr(m, "channel_prunable", True) is False:
        return False
    return type(m) in _RULES or isinstance(m, _BUILTIN) or not any(
        True for _ in m.parameters(recurse=False))


def _check_supported(model: nn.Module, ignore: Sequence[str]) -> list[nn.Module]:
    """Raise for a layer with parameters and no rule; return the ignored ones (barriers)."""
    unruled = []
    for name, m in model.named_modules():
        if not name:
            continue
        ignored = matches(name, ignore)
        if isinstance(m, RNN_TYPES) and not ignored:
            check_rnn(name, m)
        if isinstance(m, RNN_TYPES) and ignored and (m.bidirectional or getattr(m, "proj_size", 0)):
            unruled.append(m)
        if _has_rule(m):
            continue
        if not ignored:
            raise UnsupportedLayerError(
                f"'{name}' ({type(m).__name__}) has no pruning rule; add '{name}' to ignore= or "
                "register a rule with dnnzip.prune.register_rule(cls, pruner).")
        unruled.append(m)
    return unruled


class Graph:
    """Dependency graph of a model (traced on ``example``) and its prunable channel groups."""

    def __init__(self, model: nn.Module, example: torch.Tensor, *, ignore: Sequence[str] = ()):
        unruled = _check_supported(model, ignore)
        self.model = model
        self.names = {m: n for n, m in model.named_modules()}
        ignored = [m for n, m in model.named_modules() if n and matches(n, ignore)]
        barriers = set(_BARRIERS)
        shuffles = {c: f for c, f in shuffle_types().items() if c not in barriers}
        rules = dict(_RULES)
        rules.update({cls: ShufflePruner() for cls in shuffles})
        rules.update({cls: _Barrier() for cls in barriers})
        rules.update({type(m): _Barrier() for m in unruled})  # ignored layers without a rule
        barrier_modules = set(unruled)
        self.shuffles: dict = {}  # shuffle module -> (groups, channels)
        was_training = model.training
        try:
            with _opaque_rnns(model), opaque_shuffles(model, shuffles, self.shuffles), \
                    torch.enable_grad():
                dg = tp.DependencyGraph()
                dg.REGISTERED_PRUNERS[tp.ops.OPTYPE.CONV] = GroupedConvPruner()
                self.dg = dg.build_dependency(
                    model, example_inputs=example, forward_fn=lambda mod, x: mod(x),
                    customized_pruners=rules, verbose=False)
        except (UnsupportedLayerError, ConfigError):
            raise
        except Exception as exc:  # tracing failed inside the user's forward or Torch-Pruning
            raise UnsupportedLayerError(
                f"the model cannot be traced for channel pruning: {type(exc).__name__}: {exc}. "
                "Rewrite that op with tensor operations autograd can follow, or add the layer "
                "that uses it to ignore=.") from exc
        finally:
            model.train(was_training)
        self._check_reached(model, ignore)
        barrier_modules |= wire(self.dg, self.shuffles)
        for m in barrier_modules & set(self.shuffles):
            del self.shuffles[m]
        roots = (nn.Conv1d, nn.Conv2d, nn.Linear) + RNN_TYPES
        self.groups: list[Group] = []
        for g in self.dg.get_all_groups(ignored_layers=ignored, root_module_types=roots):
            if self._reaches_output(g):
                continue
            root = g[0].dep.target.module
            if not isinstance(root, nn.Module) or root in ignored:
                continue
            if any(isinstance(it.dep.target.module, tuple(barriers))
                   or it.dep.target.module in barrier_modules for it in g):
                continue
            if not self._groups_aligned(g, len(g[0].idxs)):
                continue
            members = [self.names[it.dep.target.module] for it in g
                       if isinstance(it.dep.target.module, nn.Module)
                       and it.dep.target.module in self.names]
            size = len(g[0].idxs)
            self.groups.append(Group(self.names[root], root, g[0].dep.handler, size, g, members,
                                     Layout.of(size, g, self.shuffles)))

    def _check_reached(self, model: nn.Module, ignore: Sequence[str]) -> None:
        """Every layer with weights must be on the autograd path to the output."""
        for name, m in model.named_modules():
            if (name and not matches(name, ignore) and m not in self.dg.module2node
                    and any(True for _ in m.parameters(recurse=False))):
                raise UnsupportedLayerError(
                    f"the model cannot be traced for channel pruning: layer '{name}' "
                    f"({type(m).__name__}) is not on the autograd path to the output; an op "
                    "after it leaves autograd (.detach(), .numpy(), .item(), integer or in-place "
                    f"ops) or it is unused. Rewrite that op, or add '{name}' to ignore=.")

    @staticmethod
    def _groups_aligned(g, size: int) -> bool:
        """A grouped (not depthwise) conv must see exactly this group's channels on the pruned
        side; across a concatenation its conv groups would need channels of several groups."""
        for it in g:
            m = it.dep.target.module
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.groups > 1 and not (
                    m.groups == m.in_channels == m.out_channels):
                is_out = it.dep.handler.__name__ == "prune_out_channels"
                if (m.out_channels if is_out else m.in_channels) != size:
                    return False
        return True

    @staticmethod
    def _reaches_output(g) -> bool:
        for it in g:
            node = it.dep.target
            if it.dep.handler.__name__ != "prune_out_channels":
                continue
            if not node.outputs or any(o.type == tp.ops.OPTYPE.OUTPUT for o in node.outputs):
                return True
        return False

    def prune(self, group: Group, idxs: Sequence[int]) -> None:
        """Remove channels ``idxs`` of ``group`` everywhere they appear."""
        idxs = sorted(set(int(i) for i in idxs))
        if not idxs:
            return
        if len(idxs) >= group.size:
            raise ConfigError(
                f"pruning would remove every channel ({group.size}) of layer '{group.name}'; keep at "
                "least one: lower the ratio for it or add it to ignore=.")
        self.dg.get_pruning_group(group.root, group.handler, idxs).prune()
