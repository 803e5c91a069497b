"""The one registry of compression techniques.

A technique is a frozen config dataclass registered under a dotted name plus
``apply(model, config, ctx) -> nn.Module``. ``apply`` returns a new model and never mutates its
input; the common checks in ``tests/test_common_techniques.py`` hold every registered technique
to that.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from dnnzip.config import from_dict, to_dict
from dnnzip.errors import ConfigError


@dataclass
class Context:
    """What a technique may use besides the model and its config.

    data: a ``DataBundle`` (train/val/test/calib) or None.
    teacher: the uncompressed model a recipe started from (distillation's default teacher).
    example_input: one input batch, for tracing (dependency graphs, ONNX, MACs).
    epochs: fine-tuning budget a technique may spend (0 = no fine-tuning).
    seed: everything random in a technique derives from it.
    progress: show progress bars.
    extra: free-form settings shared between recipe steps (e.g. a learned router).
    """

    data: Any = None
    teacher: nn.Module | None = None
    example_input: torch.Tensor | None = None
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3
    max_batches: int | None = None
    seed: int = 0
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def example(self) -> torch.Tensor:
        """An example input batch: the explicit one, else one from the calib/train split."""
        if self.example_input is not None:
            return self.example_input
        if self.data is not None:
            return self.data.example_input()
        raise ConfigError("this technique needs an example input: pass ctx.example_input or ctx.data")


@dataclass(frozen=True)
class Technique:
    name: str
    config_cls: type
    fn: Callable[[nn.Module, Any, Context], nn.Module]
    doc: str

    def config(self, options: dict[str, Any] | None = None) -> Any:
        return from_dict(self.config_cls, options)

    def apply(self, model: nn.Module, config: Any = None, ctx: Context | None = None) -> nn.Module:
        if config is None:
            config = self.config_cls()
        elif isinstance(config, dict):
            config = self.config(config)
        elif not isinstance(config, self.config_cls):
            raise ConfigError(
                f"technique '{self.name}' takes a {self.config_cls.__name__} or a dict, "
                f"got {type(config).__name__}"
            )
        return self.fn(model, config, ctx or Context())


_TECHNIQUES: dict[str, Technique] = {}


def technique(name: str, config_cls: type) -> Callable:
    """Decorator registering ``fn(model, config, ctx)`` as technique ``name``."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config of technique {name!r} must be a dataclass")

    def deco(fn: Callable) -> Callable:
        if name in _TECHNIQUES and _TECHNIQUES[name].fn is not fn:
            raise ValueError(f"technique {name!r} is already registered")
        _TECHNIQUES[name] = Technique(name, config_cls, fn, (fn.__doc__ or "").strip())
        return fn

    return deco


def load_builtin_techniques() -> None:
    """Import every technique module so its decorators run (explicit, not at package import)."""
    import importlib

    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real import error inside the package
                raise


_BUILTIN_MODULES = [
    "dnnzip.techniques_basic",
    "dnnzip.prune",
    "dnnzip.quant",
    "dnnzip.share",
    "dnnzip.distill",
    "dnnzip.factor",
    "dnnzip.capacity",
]


def register_module(path: str) -> None:
    """Add a module to the list imported by ``load_builtin_techniques`` (for plug-ins)."""
    if path not in _BUILTIN_MODULES:
        _BUILTIN_MODULES.append(path)


def get(name: str) -> Technique:
    load_builtin_techniques()
    try:
        return _TECHNIQUES[name]
    except KeyError:
        raise ConfigError(
            f"unknown technique {name!r}; known techniques: {', '.join(sorted(_TECHNIQUES))}"
        ) from None


def names() -> list[str]:
    load_builtin_techniques()
    return sorted(_TECHNIQUES)


def apply(name: str, model: nn.Module, config: Any = None, ctx: Context | None = None) -> nn.Module:
    return get(name).apply(model, config, ctx)


def config_dict(config: Any) -> dict[str, Any]:
    return to_dict(config)


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy, the usual first line of ``apply``."""
    return copy.deepcopy(model)
