"""Runtimes: run and time a model the way it will be deployed.

Protocol (docs/internals.md):

- ``runtime = get_runtime(name)``; ``session = runtime.prepare(model, example, threads=1)``
  (``model`` may be an ``nn.Module`` or, for file-based runtimes, a path such as an ``.onnx``);
- ``session.run(x) -> np.ndarray`` (the model's first output; ``x`` a tensor or array);
- ``runtime.time(session, x, warmup=20, repeats=200) -> LatencyStats``.

A Session has ``runtime`` (its name), ``threads`` and ``bind(x)``: a context manager that
converts ``x`` once, sets the thread count, and yields a zero-argument callable doing one
inference; ``dnnzip.profile.latency.time_latency`` times that callable.

Built-in: ``torch`` (eager), ``onnxruntime`` (alias ``ort``) and ``c`` (generated C99 compiled
with the system compiler, ``dnnzip.runtime.c``). Runtimes are imported on first use; plug-ins
call ``register_runtime``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, ContextManager, Protocol

import numpy as np

from dnnzip.errors import ConfigError
from dnnzip.profile.latency import LatencyStats, time_latency


class Session(Protocol):
    runtime: str
    threads: int

    def run(self, x: Any) -> np.ndarray: ...

    def bind(self, x: Any) -> ContextManager[Callable[[], Any]]: ...


class Runtime(Protocol):
    name: str

    def prepare(self, model: Any, example: Any, *, threads: int = 1) -> Session: ...

    def time(self, session: Session, x: Any, *, warmup: int = 20,
             repeats: int = 200) -> LatencyStats: ...


class BaseRuntime:
    """Shared ``time``; subclasses define ``name`` and ``prepare``."""

    name = "base"

    def time(self, session: Session, x: Any, *, warmup: int = 20,
             repeats: int = 200) -> LatencyStats:
        return time_latency(session, x, warmup=warmup, repeats=repeats)


# name -> "module:attribute" (imported on first use) or a factory returning a Runtime
_RUNTIMES: dict[str, str | Callable[[], Runtime]] = {
    "torch": "dnnzip.runtime.torch_rt:TorchRuntime",
    "onnxruntime": "dnnzip.runtime.ort:OrtRuntime",
    "c": "dnnzip.runtime.c:CRuntime",
}
_ALIASES = {"ort": "onnxruntime", "eager": "torch"}


def register_runtime(name: str, factory: str | Callable[[], Runtime]) -> None:
    """Add a runtime: ``factory`` is ``"pkg.module:Class"`` or a zero-argument callable."""
    _RUNTIMES[name] = factory


def runtime_names() -> list[str]:
    return sorted(_RUNTIMES)


def canonical_name(name: str) -> str:
    """The registered name of a runtime (``ort`` -> ``onnxruntime``)."""
    return _ALIASES.get(name, name)


def check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"The 'threads' parameter must be an int >= 1. Got {threads!r} instead.")
    return threads


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name`` (``torch``, ``onnxruntime``/``ort``, ``c``)."""
    key = canonical_name(name)
    factory = _RUNTIMES.get(key)
    if factory is None:
        raise ConfigError(f"unknown runtime {name!r}; available runtimes: "
                          f"{', '.join(runtime_names())}.")
    if isinstance(factory, str):
        mod_name, attr = factory.split(":")
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name != mod_name:
                raise
            raise ConfigError(f"runtime {name!r} is not available in this build ({mod_name} is "
                              f"missing); use one of: "
                              f"{', '.join(n for n in runtime_names() if n != key)}.") from None
        factory = getattr(module, attr)
    return factory()


def evaluate_session(session: Session, dataset: Any, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of a session on a ``(x, y)`` dataset (measured on that runtime)."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    correct = total = 0
    for x, y in loader:
        out = session.run(x)
        pred = torch.as_tensor(np.asarray(out)).argmax(dim=-1)
        correct += int((pred == torch.as_tensor(y)).sum())
        total += int(y.numel())
    if total == 0:
        raise ConfigError("cannot evaluate on an empty dataset")
    return correct / total


__all__ = ["Session", "Runtime", "BaseRuntime", "get_runtime", "register_runtime", "canonical_name",
           "runtime_names", "evaluate_session", "LatencyStats", "time_latency"]
