"""Helpers shared by the factorization and redesign techniques: layer selection by name or
``re:`` pattern, module replacement by dotted path, and optional recovery training."""
from __future__ import annotations

import copy
import re
from typing import Callable, Iterable

import torch
from torch import nn

from dnnzip.nn.surgery import set_module  # noqa: F401  (used by the family)

from dnnzip.registry import Context


def matches(name: str, patterns: Iterable[str]) -> bool:
    """True if ``name`` equals one of ``patterns`` or matches a ``re:`` pattern."""
    for p in patterns:
        if p.startswith("re:"):
            if re.fullmatch(p[3:], name):
                return True
        elif p == name:
            return True
    return False


def targets(model: nn.Module, kinds: tuple[type, ...], ignore: tuple[str, ...]
            ) -> list[tuple[str, nn.Module]]:
    """Named submodules of exactly the given types, minus ``ignore``, in definition order."""
    return [(n, m) for n, m in model.named_modules()
            if n and type(m) in kinds and not matches(n, ignore)]


def recover(model: nn.Module, ctx: Context, *, teacher: nn.Module | None = None,
            temperature: float = 4.0, alpha: float = 0.9) -> nn.Module:
    """Fine-tune ``model`` in place on ``ctx.data`` (if any, and ``ctx.epochs > 0``).

    With a ``teacher`` the loss is Hinton KD (soft targets at ``temperature``, weight ``alpha``)
    plus cross-entropy; ``dnnzip.distill`` provides it when installed, else a local copy is used.
    Uses ``dnnzip.train.finetune`` when available, else a minimal Adam loop.
    """
    loss_fn = None
    if teacher is not None:
        loss_fn = kd_hook(copy.deepcopy(teacher), temperature, alpha)
    return recover_with(model, ctx, loss_fn)


def recover_with(model: nn.Module, ctx: Context, loss_fn: Callable | None) -> nn.Module:
    """Train ``model`` in place with the trainer's ``loss_fn`` hook (None = cross-entropy)."""
    if ctx.data is None or ctx.epochs <= 0:
        return model
    try:
        from dnnzip.train import finetune
    except ImportError:
        finetune = None
    if finetune is not None:
        finetune(model, ctx, loss_fn=loss_fn)
    else:
        _local_fit(model, ctx, loss_fn)
    return model.eval()


def kd_hook(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> Callable:
    """Trainer ``loss_fn`` for Hinton KD: ``dnnzip.distill.losses.kd_loss_fn`` if present."""
    try:
        from dnnzip.distill.losses import kd_loss_fn
        return kd_loss_fn(teacher, T=temperature, alpha=alpha)
    except ImportError:
        pass
    teacher.eval()

    def loss_fn(model, x, y, logits):  # noqa: ANN001 - trainer hook signature
        with torch.no_grad():
            t = teacher(x)
        soft = nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, -1),
                                    nn.functional.softmax(t / temperature, -1),
                                    reduction="batchmean") * temperature ** 2
        return alpha * soft + (1 - alpha) * nn.functional.cross_entropy(logits, y)
    return loss_fn


def _local_fit(model: nn.Module, ctx: Context, loss_fn: Callable | None) -> None:
    loader = torch.utils.data.DataLoader(ctx.data.train, batch_size=ctx.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(ctx.seed))
    opt = torch.optim.Adam(model.parameters(), lr=ctx.lr)
    model.train()
    for _ in range(ctx.epochs):
        for i, (x, y) in enumerate(loader):
            if ctx.max_batches is not None and i >= ctx.max_batches:
                break
            logits = model(x)
            loss = (loss_fn(model, x, y, logits) if loss_fn
                    else nn.functional.cross_entropy(logits, y))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
