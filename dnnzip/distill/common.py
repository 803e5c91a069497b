"""Helpers every distillation technique shares: teacher and data resolution, loaders, limits."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from dnnzip.errors import ConfigError, DataError
from dnnzip.registry import Context


def frozen(model: nn.Module) -> nn.Module:
    """A private eval-mode copy with gradients off, so a teacher is never mutated by a student step."""
    twin = copy.deepcopy(model)
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def resolve_teacher(model: nn.Module, ctx: Context, where: str) -> nn.Module:
    """``ctx.teacher`` (the uncompressed model a recipe started from); without one, the input model
    itself acts as its own teacher (born-again style), which keeps a technique usable alone."""
    teacher = ctx.teacher if ctx.teacher is not None else model
    if not isinstance(teacher, nn.Module):
        raise ConfigError(f"{where}: ctx.teacher must be an nn.Module, got {type(teacher).__name__}")
    return frozen(teacher)


def require_data(ctx: Context, where: str) -> Any:
    data = ctx.data
    if data is None or getattr(data, "train", None) is None:
        raise DataError(f"{where} trains the student: pass ctx.data (a DataBundle with a train split)")
    if len(data.train) == 0:
        raise DataError(f"{where}: the train split of ctx.data is empty; expected labelled samples")
    return data


def eval_split(data: Any) -> Dataset | None:
    """The split used for halting and reports: val, else test, else None."""
    for name in ("val", "test"):
        split = getattr(data, name, None)
        if split is not None and len(split) > 0:
            return split
    return None


def eval_limit(ctx: Context) -> int | None:
    """Quick runs (``max_batches``) evaluate on as many samples as they train per epoch."""
    return None if ctx.max_batches is None else max(ctx.max_batches * ctx.batch_size, 1)


def limited(dataset: Dataset, limit: int | None) -> Dataset:
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, range(limit))


def train_loader(dataset: Dataset, ctx: Context, *, shuffle: bool = True, seed_offset: int = 0,
                 batch_size: int | None = None) -> DataLoader:
    gen = torch.Generator().manual_seed(ctx.seed + seed_offset)
    return DataLoader(dataset, batch_size=batch_size or ctx.batch_size, shuffle=shuffle,
                      generator=gen, drop_last=False)


def labels_of(dataset: Dataset) -> torch.Tensor:
    """All labels of a dataset (fast path for TensorDataset-like ``.tensors`` / ``.targets``)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        return torch.as_tensor(tensors[1]).long()
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


class Indexed(Dataset):
    """Yields ``(x, y, index)`` so per-sample cached teacher outputs can be looked up."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i][:2]
        return x, y, i
