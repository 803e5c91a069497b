"""Training: ``fit`` / ``evaluate`` / ``predict`` / ``finetune``.

One loop serves training from scratch and the fine-tuning that follows every compression step
(the survey's Sec. III: a pruned model "is trained on the existing dataset ... fine-tuning").
Techniques plug in through three hooks (docs/internals.md): ``loss_fn(model, x, y, logits)``
replaces cross-entropy (logits transfer, Hinton et al. 2015; survey Sec. VI-A),
``extra_loss(model, x, y, logits)`` is added to it (network-slimming L1 on BN scales, variational
dropout's KL) and ``after_step(model)`` runs after every optimiser step (re-applying pruning
masks as in Han et al. 2015; clipping binary weights). Runs are reproducible: seeds are set, the
shuffle order of epoch ``e`` depends only on ``(seed, e)``, and a checkpoint holds the RNG
state, so an interrupted run resumed from its checkpoint ends with the same weights.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dnnzip.config import check_choice, check_range, to_dict
from dnnzip.errors import ConfigError, DataError, DnnzipError, FormatError

Hook = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
CHECKPOINT_FORMAT = "dnnzip.fit/1"
# settings that must match for a checkpoint to be resumed (epochs may grow, progress may change)
_RESUME_KEYS = ("batch_size", "lr", "optimizer", "momentum", "weight_decay", "schedule", "seed",
                "max_batches")


class DivergedError(DnnzipError, ArithmeticError):
    """The loss became NaN or infinite."""

    exit_code = 1


@dataclass(frozen=True)
class TrainSettings:
    """How ``fit`` trains.

    The defaults (Adam 1e-3, batch 128, cosine decay to 0 over all steps, no augmentation) reach
    >= 90 % test accuracy with lenet5 and >= 88.5 % with lenet300 on Fashion-MNIST in 15 epochs
    (see benchmarks/results/train.md).
    optimizer: "adam" or "sgd" (with ``momentum``, Nesterov off).
    schedule: "cosine" (per step) or "constant".
    patience: stop after this many epochs without a better validation score (None: never).
    max_batches: cap on batches per epoch (and on validation batches), for quick runs and tests.
    threads: torch intra-op threads during the fit (None: leave as is).
    """

    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    patience: int | None = 5
    max_batches: int | None = None
    progress: bool = True
    threads: int | None = None

    def __post_init__(self):
        check_range(self, "epochs", 0, None, integer=True)
        check_range(self, "batch_size", 1, None, integer=True)
        check_range(self, "lr", 0.0, None, left_open=True)
        check_choice(self, "optimizer", ("adam", "sgd"))
        check_range(self, "momentum", 0.0, 1.0, right_open=True)
        check_range(self, "weight_decay", 0.0, None)
        check_choice(self, "schedule", ("cosine", "constant"))
        check_range(self, "seed", 0, None, integer=True)
        if self.patience is not None:
            check_range(self, "patience", 1, None, integer=True)
        if self.max_batches is not None:
            check_range(self, "max_batches", 1, None, integer=True)
        if self.threads is not None:
            check_range(self, "threads", 1, None, integer=True)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_score: float
    lr: float
    seconds: float


@dataclass
class FitResult:
    """What happened. ``val_score`` is top-1 accuracy (or minus the validation loss for bundles
    whose metric is not accuracy); ``best_epoch`` counts from 1, 0 when nothing ran."""

    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_score: float = float("nan")
    stopped_early: bool = False
    resumed_from: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed ``torch``, ``numpy`` and ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batches(source: Any, batch_size: int) -> Iterable:
    """A DataBundle (its test split), a Dataset or any iterable of (x, y) batches."""
    if hasattr(source, "test") and hasattr(source, "loader"):
        return source.loader("test", batch_size=batch_size)
    if isinstance(source, Dataset) and not isinstance(source, DataLoader):
        if len(source) == 0:  # type: ignore[arg-type]
            raise DataError("cannot evaluate on an empty dataset.")
        return DataLoader(source, batch_size=batch_size)
    return source


def _to(t: Any, device: torch.device) -> Any:
    return t.to(device) if isinstance(t, Tensor) else t


@torch.no_grad()
def predict(model: nn.Module, loader: Any, *, batch_size: int = 256,
            max_batches: int | None = None) -> Tensor:
    """Concatenated outputs (logits) of ``model`` in eval mode over ``loader``'s inputs."""
    was, dev, outs = model.training, _device(model), []
    model.eval()
    try:
        for i, (x, _y) in enumerate(_batches(loader, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            outs.append(model(_to(x, dev)).cpu())
    finally:
        model.train(was)
    if not outs:
        raise DataError("predict: the loader yielded no batches.")
    return torch.cat(outs)


@torch.no_grad()
def evaluate(model: nn.Module, dataset_or_loader: Any, *, batch_size: int = 256,
             max_batches: int | None = None) -> float:
    """Top-1 accuracy in [0, 1] (a DataBundle is evaluated on its test split)."""
    was, dev = model.training, _device(model)
    correct = total = 0
    model.eval()
    try:
        for i, (x, y) in enumerate(_batches(dataset_or_loader, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            pred = model(_to(x, dev)).argmax(dim=1).cpu()
            correct += int((pred == torch.as_tensor(y).view(-1)).sum())
            total += len(pred)
    finally:
        model.train(was)
    if total == 0:
        raise DataError("evaluate: the dataset or loader yielded no samples.")
    return correct / total


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("fit: the model has no trainable parameters (all requires_grad=False).")
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)


def _lr_at(s: TrainSettings, step: int, total: int) -> float:
    if s.schedule == "constant" or total <= 0:
        return s.lr
    return s.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


@torch.no_grad()
def _val_score(model: nn.Module, data: Any, s: TrainSettings, loss: Callable) -> float:
    loader = data.loader("val", batch_size=max(256, s.batch_size))
    if getattr(data, "metric", "accuracy") == "accuracy":
        return evaluate(model, loader, max_batches=s.max_batches)
    was, dev, tot, n = model.training, _device(model), 0.0, 0
    model.eval()
    try:
        for i, (x, y) in enumerate(loader):
            if s.max_batches is not None and i >= s.max_batches:
                break
            x, y = _to(x, dev), _to(y, dev)
            tot += float(loss(model, x, y, model(x))) * len(y)
            n += len(y)
    finally:
        model.train(was)
    return -tot / max(n, 1)


# ---------------------------------------------------------------- checkpoints
def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "state": torch.tensor(pystate, dtype=torch.int64),
                       "gauss": gauss}}


def _set_rng_state(r: dict[str, Any]) -> None:
    torch.set_rng_state(r["torch"])
    n = r["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = r["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".part")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, settings: TrainSettings) -> dict[str, Any]:
    fix = f"delete '{path}' or pass resume=False to start over"
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a FormatError
        raise FormatError(f"checkpoint '{path}' is unreadable ({type(exc).__name__}: {exc}); "
                          f"{fix}.") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"checkpoint '{path}' is not a {CHECKPOINT_FORMAT} checkpoint; {fix}.")
    saved, now = ck.get("settings", {}), to_dict(settings)
    diff = [k for k in _RESUME_KEYS if saved.get(k) != now[k]]
    if diff:
        raise ConfigError(f"checkpoint '{path}' was written with different settings "
                          f"({', '.join(f'{k}: {saved.get(k)!r} -> {now[k]!r}' for k in diff)}); "
                          f"{fix}.")
    return ck


# ---------------------------------------------------------------- the loop
def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=True,
                    console=Console(stderr=True, log_path=False))  # stdout stays for results


def _check_data(data: Any) -> None:
    for attr in ("train", "val", "loader"):
        if not hasattr(data, attr):
            raise DataError(f"fit needs a DataBundle (train/val splits); "
                            f"got {type(data).__name__}.")
    for split in ("train", "val"):
        if len(getattr(data, split)) == 0:
            raise DataError(f"fit: the {split} split of '{getattr(data, 'name', '?')}' is empty.")


def _resume(path: Path, s: TrainSettings, model: nn.Module, opt: torch.optim.Optimizer,
            result: FitResult) -> tuple[int, int, dict | None]:
    """Load ``path`` into model, optimiser, RNGs and ``result``; (start epoch, bad epochs, best)."""
    ck = _load_checkpoint(path, s)
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise FormatError(f"checkpoint '{path}' does not fit this model ({exc}); "
                          f"delete it or pass resume=False.") from None
    _set_rng_state(ck["rng"])
    result.history = [EpochStats(**h) for h in ck["history"]]
    result.best_epoch, result.best_val_score = ck["best_epoch"], ck["best_val_score"]
    result.stopped_early = ck["stopped"]
    result.resumed_from = ck["epoch"]
    return ck["epoch"], ck["bad_epochs"], ck["best_state"]


def _train_epoch(model: nn.Module, data: Any, s: TrainSettings, opt: torch.optim.Optimizer,
                 epoch: int, steps: int, hooks: dict[str, Any], bar: Any, task: Any
                 ) -> tuple[float, float]:
    """One pass over (at most ``steps`` batches of) the train split; (mean loss, last lr)."""
    model.train()
    dev, total = _device(model), s.epochs * steps
    loader = data.loader("train", batch_size=s.batch_size, shuffle=True,
                         seed=s.seed * 100_003 + epoch)
    run_loss, n, lr = 0.0, 0, s.lr
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        lr = _lr_at(s, epoch * steps + i, total)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = _to(x, dev), _to(y, dev)
        logits = model(x)
        loss = hooks["loss_fn"](model, x, y, logits)
        if hooks["extra_loss"] is not None:
            loss = loss + hooks["extra_loss"](model, x, y, logits)
        if not torch.isfinite(loss):
            raise DivergedError(
                f"fit: the loss became {float(loss.detach())} at epoch {epoch + 1}, batch "
                f"{i + 1} (lr {lr:.3g}); expected a finite loss. Lower the learning rate "
                f"(now {s.lr:g}), check the inputs for extreme values, or reduce the weight "
                f"of extra_loss.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hooks["after_step"] is not None:
            hooks["after_step"](model)
        run_loss += float(loss.detach()) * len(y)
        n += len(y)
        if bar:
            bar.update(task, advance=1, status=f"loss {run_loss / n:.4f}")
    return run_loss / max(n, 1), lr


def fit(model: nn.Module, data: Any, settings: TrainSettings | None = None, *,
        loss_fn: Hook | None = None, extra_loss: Hook | None = None,
        after_step: Callable[[nn.Module], None] | None = None,
        checkpoint: str | os.PathLike | None = None, resume: bool = True) -> FitResult:
    """Train ``model`` in place on ``data.train``; return the per-epoch history.

    After each epoch the validation score decides the best weights, which are restored at the
    end (the model is left in eval mode). ``checkpoint``: a file rewritten atomically after every
    epoch (model, optimiser, RNG, history); if it exists and ``resume``, training continues from
    the epoch it records. Loaded with ``weights_only=True``: nothing is unpickled.
    """
    s = settings or TrainSettings()
    _check_data(data)
    ce = loss_fn or (lambda m, x, y, logits: F.cross_entropy(logits, y))
    hooks = {"loss_fn": ce, "extra_loss": extra_loss, "after_step": after_step}
    ck_path = Path(checkpoint) if checkpoint is not None else None
    t_start, result = time.perf_counter(), FitResult()
    with _threads(s.threads):
        seed_everything(s.seed)
        opt = _optimizer(model, s)
        start, bad, best_state = 0, 0, None
        if ck_path is not None and resume and ck_path.is_file():
            start, bad, best_state = _resume(ck_path, s, model, opt, result)
        steps = len(data.loader("train", batch_size=s.batch_size))
        steps = min(steps, s.max_batches) if s.max_batches else steps
        with _progress(s.progress) as bar:
            task = bar.add_task("train", total=steps, status="") if bar else None
            for epoch in range(start, s.epochs):
                if result.stopped_early:
                    break
                t0 = time.perf_counter()
                if bar:
                    bar.reset(task, total=steps, description=f"epoch {epoch + 1}/{s.epochs}")
                loss, lr = _train_epoch(model, data, s, opt, epoch, steps, hooks, bar, task)
                score = _val_score(model, data, s, ce)
                result.history.append(EpochStats(epoch + 1, loss, score, lr,
                                                 time.perf_counter() - t0))
                if best_state is None or score > result.best_val_score:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    result.best_epoch, result.best_val_score, bad = epoch + 1, score, 0
                else:
                    bad += 1
                result.stopped_early = s.patience is not None and bad >= s.patience
                if ck_path is not None:
                    _save_checkpoint(ck_path, {
                        "format": CHECKPOINT_FORMAT, "epoch": epoch + 1,
                        "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "best_state": best_state, "best_epoch": result.best_epoch,
                        "best_val_score": result.best_val_score, "bad_epochs": bad,
                        "stopped": result.stopped_early, "settings": to_dict(s),
                        "history": [asdict(h) for h in result.history], "rng": _rng_state()})
                if bar:
                    bar.console.log(f"epoch {epoch + 1}: loss {loss:.4f}, val {score:.4f}")
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - t_start
    return result


def finetune(model: nn.Module, ctx: Any, *, epochs: int | None = None,
             loss_fn: Hook | None = None, extra_loss: Hook | None = None,
             after_step: Callable[[nn.Module], None] | None = None,
             checkpoint: str | os.PathLike | None = None) -> FitResult:
    """``fit`` with settings from a ``dnnzip.registry.Context`` on ``ctx.data`` (in place).

    ``epochs`` overrides ``ctx.epochs``; 0 epochs returns at once without touching the model.
    """
    n = ctx.epochs if epochs is None else epochs
    if n == 0:
        return FitResult()
    if ctx.data is None:
        raise ConfigError("finetune needs data: pass a DataBundle as ctx.data "
                          "(e.g. dnnzip.data.load_data('fashion-mnist')).")
    s = TrainSettings(epochs=n, batch_size=ctx.batch_size, lr=ctx.lr,
                      max_batches=ctx.max_batches, seed=ctx.seed, progress=ctx.progress)
    return fit(model, ctx.data, s, loss_fn=loss_fn, extra_loss=extra_loss,
               after_step=after_step, checkpoint=checkpoint)

