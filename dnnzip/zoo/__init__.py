"""The model zoo: named architectures built from JSON-able keyword arguments.

``build(name, **kwargs)`` returns a fresh model carrying ``model._dnnzip_ref = {"zoo": name,
"kwargs": kwargs}``, which is how an artifact records its structure without pickling (see
``dnnzip.nn.spec``). ``options(name)`` gives a model's kwargs and defaults. Common kwargs: ``num_classes``, ``in_channels`` and the geometry
(``input_size`` for images, ``length`` for series). ``from_ref(ref)`` rebuilds from a recorded
reference; user builders (``pkg.module:build``) live in ``dnnzip.zoo.builder``.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.zoo import lenet, minilm, mlp, mobilenet, resnet, sequence, shufflenet, vgg

__all__ = ["build", "from_ref", "info", "names", "options", "register"]


@dataclass(frozen=True)
class _Entry:
    name: str
    fn: Callable[..., nn.Module]
    description: str
    input_shape: tuple[int, ...]
    dataset: str


_ENTRIES: dict[str, _Entry] = {}
_PARAMS: dict[str, int] = {}


def register(name: str, *, description: str, input_shape: tuple[int, ...], dataset: str,
             replace: bool = False) -> Callable:
    """Decorator adding builder ``fn(**kwargs) -> nn.Module`` to the zoo as ``name``.

    The builder's keyword parameters are the model's options: their names are what ``build``
    accepts. ``input_shape`` is one sample's default shape (no batch axis), ``dataset`` the
    suggested ``load_data`` spec.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ENTRIES and not replace and _ENTRIES[name].fn is not fn:
            raise ConfigError(f"zoo model {name!r} is already registered; pass replace=True")
        _ENTRIES[name] = _Entry(name, fn, description, tuple(input_shape), dataset)
        _PARAMS.pop(name, None)
        return fn

    return deco


def names() -> list[str]:
    """Registered model names, in registration order."""
    return list(_ENTRIES)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str) or name not in _ENTRIES:
        raise ConfigError(
            f"unknown zoo model {name!r}; known models: {', '.join(_ENTRIES)}. For your own "
            "architecture pass a builder 'pkg.module:function' (dnnzip.zoo.builder)."
        )
    return _ENTRIES[name]


def options(name: str) -> dict[str, Any]:
    """The keyword options of zoo model ``name`` with their defaults (lists, JSON-style)."""
    params = inspect.signature(_entry(name).fn).parameters.values()
    return {p.name: (list(p.default) if isinstance(p.default, tuple) else p.default)
            for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _json_kwargs(where: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` as they come back from JSON (tuples become lists); non-JSON values refused."""
    try:
        text = json.dumps(kwargs, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the options of {where} must be JSON values (numbers, strings, bools, lists, "
            f"dicts) so the artifact can record them; {exc}"
        ) from None
    return json.loads(text)


def build(name: str, **kwargs: Any) -> nn.Module:
    """A new zoo model ``name`` built with ``kwargs``; sets ``model._dnnzip_ref``."""
    entry = _entry(name)
    valid = options(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"zoo model {name!r} has no option(s) {', '.join(map(repr, unknown))}; valid options "
            f"are: {', '.join(f'{k}={v!r}' for k, v in valid.items())}."
        )
    kwargs = _json_kwargs(f"zoo model {name!r}", kwargs)
    model = entry.fn(**kwargs)
    model._dnnzip_ref = {"zoo": name, "kwargs": kwargs}
    return model


def from_ref(ref: dict[str, Any], *, trust_builder: bool = False) -> nn.Module:
    """Rebuild the untrained model a ``_dnnzip_ref`` describes.

    A ``{"builder": "pkg.mod:fn"}`` reference runs user code, so it is refused unless the caller
    passes ``trust_builder=True`` (the user named that builder on the command line).
    """
    if not isinstance(ref, dict) or not isinstance(ref.get("kwargs", {}), dict):
        raise ConfigError(f"a model reference must be {{'zoo': NAME, 'kwargs': {{...}}}}, got {ref!r}")
    if "zoo" in ref:
        return build(ref["zoo"], **ref.get("kwargs", {}))
    if "builder" in ref:
        if not trust_builder:
            raise ConfigError(
                f"the model reference names user builder {ref['builder']!r}, which would run "
                "its code; pass it explicitly (--builder / trust_builder=True) if you trust it"
            )
        from dnnzip.zoo.builder import build_user
        return build_user(ref["builder"], ref.get("kwargs", {}))
    raise ConfigError(f"a model reference needs a 'zoo' or 'builder' key, got keys {sorted(ref)}")


def info(name: str) -> dict[str, Any]:
    """Description, default input shape (one sample), suggested dataset, options, and the
    parameter count of the default model."""
    entry = _entry(name)
    if name not in _PARAMS:  # on the meta device: no weights are read or allocated
        import torch
        with torch.device("meta"):
            _PARAMS[name] = sum(p.numel() for p in entry.fn().parameters())
    return {"name": name, "description": entry.description,
            "input_shape": list(entry.input_shape), "dataset": entry.dataset,
            "options": options(name), "params": _PARAMS[name]}


_IMAGE = (1, 28, 28)
_SERIES = (1, 40)
for _name, _fn, _shape, _data, _desc in [
    ("lenet300", mlp.build_lenet300, _IMAGE, "fashion-mnist",
     "LeNet-300-100 MLP (784-300-100-10, ReLU), Han et al. 2015 / Deep Compression"),
    ("lenet5", lenet.build_lenet5, _IMAGE, "fashion-mnist",
     "LeNet-5, Caffe variant (conv 20-50 5x5, fc 500), 431,080 parameters"),
    ("vgg_bn", vgg.build_vgg_bn, _IMAGE, "fashion-mnist",
     "small VGG-style CNN with BatchNorm (32-32-M-64-64-M-128-M, fc 256)"),
    ("resnet", resnet.build_resnet, _IMAGE, "fashion-mnist",
     "CIFAR-style ResNet-14 (basic blocks, 3 stages 16-32-64, projection shortcuts)"),
    ("mobilenet", mobilenet.build_mobilenet, _IMAGE, "fashion-mnist",
     "MobileNet-style depthwise-separable CNN with width multiplier"),
    ("shufflenet", shufflenet.build_shufflenet, _IMAGE, "fashion-mnist",
     "ShuffleNet-style units (1x1 group conv, channel shuffle, 3x3 depthwise)"),
    ("cnn1d", sequence.build_cnn1d, _SERIES, "mnist1d",
     "1-D CNN for (N, C, L) sensor series (3 conv-BN-ReLU layers, global pool)"),
    ("gru", sequence.build_gru, _SERIES, "mnist1d",
     "GRU classifier over L time steps of C features"),
    ("lstm", sequence.build_lstm, _SERIES, "mnist1d",
     "LSTM classifier over L time steps of C features"),
    ("deepsense", sequence.build_deepsense, _SERIES, "mnist1d",
     "DeepSense-style: per-interval 1-D conv features, GRU over intervals, linear"),
]:
    register(_name, description=_desc, input_shape=_shape, dataset=_data)(_fn)
del _name, _fn, _shape, _data, _desc
register("minilm", input_shape=(128,), dataset="text:PATH",
         description="all-MiniLM-L6-v2 sentence encoder (BERT-style: 6 layers, 12 heads, hidden "
                     "384, FFN 1536, mean pooling); token ids (N, L) in")(minilm.minilm)
