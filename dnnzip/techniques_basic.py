"""The identity technique: the smallest registered technique, used by the common checks."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dnnzip.registry import Context, fresh_copy, technique


@dataclass(frozen=True)
class IdentityConfig:
    """No options: returns an unchanged copy of the model."""


@technique("identity", IdentityConfig)
def identity(model: nn.Module, config: IdentityConfig, ctx: Context) -> nn.Module:
    """Return a copy of ``model``; a baseline step for recipes and the common checks."""
    return fresh_copy(model)
