"""The ``torch`` runtime: eager PyTorch on the CPU, ``torch.set_num_threads`` scoped to each call."""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.runtime import BaseRuntime, check_threads


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block, restoring the previous value."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _to_tensors(x: Any) -> tuple[torch.Tensor, ...]:
    xs = x if isinstance(x, (tuple, list)) else (x,)
    return tuple(torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v for v in xs)


def _first(out: Any) -> torch.Tensor:
    while isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out


class TorchSession:
    runtime = "torch"

    def __init__(self, model: nn.Module, threads: int):
        self.model = model
        self.threads = threads

    def run(self, x: Any) -> np.ndarray:
        with self.bind(x) as call:
            return _first(call()).detach().cpu().numpy()

    @contextlib.contextmanager
    def bind(self, x: Any) -> Iterator[Callable[[], Any]]:
        xs = _to_tensors(x)
        model = self.model
        with torch_threads(self.threads), torch.inference_mode():
            yield lambda: model(*xs)


class TorchRuntime(BaseRuntime):
    name = "torch"

    def prepare(self, model: Any, example: Any = None, *, threads: int = 1) -> TorchSession:
        """A session on an eval-mode copy of ``model`` (the input model is not touched)."""
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the torch runtime runs an nn.Module, got {type(model).__name__}; "
                              f"for an .onnx file use --runtime onnxruntime")
        return TorchSession(copy.deepcopy(model).eval(), check_threads(threads))
