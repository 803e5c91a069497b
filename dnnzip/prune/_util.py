"""Small helpers shared by the pruning techniques: layer selection by name or ``re:`` pattern,
module replacement, calibration batches, evaluation and fine-tuning (through
``dnnzip.train.finetune`` when it is installed, else a minimal Adam loop)."""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.nn.surgery import set_module  # noqa: F401  (used by the family)

from dnnzip.errors import ConfigError
from dnnzip.registry import Context


def matches(name: str, patterns: Iterable[str]) -> bool:
    """True if ``name`` (or a parent of it) equals a pattern or matches a ``re:`` pattern."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for p in patterns:
        if p.startswith("re:"):
            if any(re.fullmatch(p[3:], q) for q in prefixes):
                return True
        elif p in prefixes:
            return True
    return False


def lookup(overrides: dict, name: str, default: float) -> float:
    """The override for ``name`` (exact name first, then ``re:`` patterns), else ``default``."""
    if name in overrides:
        return overrides[name]
    for p, v in overrides.items():
        if p.startswith("re:") and re.fullmatch(p[3:], name):
            return v
    return default


def check_overrides(config, field_name: str, names: Iterable[str]) -> None:
    """Every non-pattern override key must name a real layer (catches typos)."""
    names = set(names)
    for key in getattr(config, field_name):
        if not key.startswith("re:") and key not in names:
            raise ConfigError(
                f"The '{field_name}' parameter of {type(config).__name__} names layer {key!r}, "
                f"which is not a prunable layer of this model; prunable layers: "
                f"{', '.join(sorted(names)) or '(none)'}.")


def check_ratio_map(config, field_name: str) -> None:
    for key, v in getattr(config, field_name).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ConfigError(
                f"The '{field_name}' parameter of {type(config).__name__} must map layer names to "
                f"floats in [0, 1). Got {v!r} for {key!r} instead.")


def _split(data, name: str):
    for n in (name, "calib", "train", "val", "test"):
        ds = getattr(data, n, None)
        if ds is not None and len(ds) > 0:
            return ds
    return None


def batches(ctx: Context, split: str = "calib", n_batches: int | None = None,
            batch_size: int | None = None, shuffle: bool = False) -> Iterator:
    """Batches (x, y) of a split; falls back to the example input with no labels."""
    ds = _split(ctx.data, split) if ctx.data is not None else None
    if ds is None:
        yield ctx.example(), None
        return
    gen = torch.Generator().manual_seed(ctx.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size or ctx.batch_size,
                                         shuffle=shuffle, generator=gen)
    for i, (x, y) in enumerate(loader):
        if n_batches is not None and i >= n_batches:
            break
        yield x, y


def calib_batches(ctx: Context, n_batches: int = 4) -> list:
    cap = ctx.max_batches if ctx.max_batches is not None else n_batches
    return list(batches(ctx, "calib", min(n_batches, max(cap, 1))))


@torch.no_grad()
def accuracy(model: nn.Module, ctx: Context, split: str = "val",
             max_batches: int | None = None) -> float:
    """Top-1 accuracy on a split (at most ``max_batches`` batches); the model is left in eval."""
    model.eval()
    correct = total = 0
    for x, y in batches(ctx, split, max_batches, batch_size=256):
        if y is None:
            raise ConfigError("accuracy needs labelled data: pass ctx.data")
        correct += int((model(x).argmax(-1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def finetune(model: nn.Module, ctx: Context, *, epochs: int | None = None,
             extra_loss: Callable | None = None, after_step: Callable | None = None) -> nn.Module:
    """Fine-tune ``model`` in place for ``epochs`` (default ``ctx.epochs``) on ``ctx.data``."""
    epochs = ctx.epochs if epochs is None else epochs
    if ctx.data is None or epochs <= 0:
        return model
    run_ctx = dataclasses.replace(ctx, epochs=epochs)
    try:
        from dnnzip.train import finetune as external
    except ImportError:
        external = None
    if external is not None:
        external(model, run_ctx, extra_loss=extra_loss, after_step=after_step)
    else:
        _local_fit(model, run_ctx, extra_loss, after_step)
    return model.eval()


def _local_fit(model, ctx, extra_loss, after_step) -> None:
    torch.manual_seed(ctx.seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=ctx.lr)
    model.train()
    for epoch in range(ctx.epochs):
        for i, (x, y) in enumerate(batches(ctx, "train", ctx.max_batches, shuffle=True)):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if extra_loss is not None:
                loss = loss + extra_loss(model, x, y, logits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
    model.eval()
