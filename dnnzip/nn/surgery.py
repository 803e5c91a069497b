"""Module surgery shared by the techniques that replace layers."""
from __future__ import annotations

from torch import nn


def set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``path`` by ``new``."""
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)
