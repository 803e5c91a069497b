"""Channel-pruning rule for GRU/LSTM hidden units, which Torch-Pruning does not cover.

Removing hidden unit j of an ``nn.GRU``/``nn.LSTM`` (all layers share ``hidden_size``) deletes,
in every layer l, row j of each gate block of ``weight_ih_l{l}``, ``weight_hh_l{l}`` and both
biases, column j of ``weight_hh_l{l}``, and column j of ``weight_ih_l{l+1}``; downstream layers
lose input j. Removing input feature j deletes column j of ``weight_ih_l0``. (Torch-Pruning's
own LSTM rule handles one layer only and prunes the biases and ``weight_hh`` columns
incompletely, so this rule replaces it.) Bidirectional RNNs and LSTM projections have no rule
yet: they raise ``UnsupportedLayerError`` unless ignored.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from dnnzip.errors import UnsupportedLayerError

RNN_TYPES = (nn.GRU, nn.LSTM)


def gates(layer: nn.Module) -> int:
    return 4 if isinstance(layer, nn.LSTM) else 3


def check_rnn(name: str, layer: nn.Module) -> None:
    if layer.bidirectional or getattr(layer, "proj_size", 0):
        kind = "bidirectional" if layer.bidirectional else "projected (proj_size)"
        raise UnsupportedLayerError(
            f"'{name}' ({type(layer).__name__}, {kind}) has no channel-pruning rule; add "
            f"'{name}' to ignore= or register a rule with dnnzip.prune.register_rule(...).")


def _keep(n: int, idxs: Sequence[int]) -> torch.Tensor:
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _select(layer: nn.Module, name: str, dim: int, keep: torch.Tensor) -> None:
    p = getattr(layer, name)
    setattr(layer, name, nn.Parameter(p.detach().index_select(dim, keep.to(p.device)).clone(),
                                      requires_grad=p.requires_grad))


class RNNHiddenPruner(BasePruningFunc):
    """Torch-Pruning layer rule: out channels = hidden units, in channels = input features."""

    TARGET_MODULES = RNN_TYPES

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        h = layer.hidden_size
        keep = _keep(h, idxs)
        rows = torch.cat([keep + g * h for g in range(gates(layer))])
        for l in range(layer.num_layers):
            _select(layer, f"weight_ih_l{l}", 0, rows)
            if l > 0:
                _select(layer, f"weight_ih_l{l}", 1, keep)
            _select(layer, f"weight_hh_l{l}", 0, rows)
            _select(layer, f"weight_hh_l{l}", 1, keep)
            if layer.bias:
                _select(layer, f"bias_ih_l{l}", 0, rows)
                _select(layer, f"bias_hh_l{l}", 0, rows)
        layer.hidden_size = len(keep)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(layer.input_size, idxs)
        _select(layer, "weight_ih_l0", 1, keep)
        layer.input_size = len(keep)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.hidden_size

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.input_size


def hidden_magnitude(layer: nn.Module, p: int = 1) -> torch.Tensor:
    """L_p norm of every weight that produces hidden unit j (its rows in all gates, all layers)."""
    h, g = layer.hidden_size, gates(layer)
    score = torch.zeros(h)
    for name, w in layer.named_parameters():
        if name.startswith(("weight_ih", "weight_hh")):
            score += w.detach().abs().pow(p).view(g, h, -1).sum(dim=(0, 2))
    return score.pow(1.0 / p)
