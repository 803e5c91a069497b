"""The one pipeline every weight/activation quantization technique runs through.

copy -> fold BN -> find layers (UnsupportedLayerError for a parametric layer with no rule) ->
calibrate activation ranges -> wrap each layer in a training-time ``FakeQuantLayer`` ->
(optional bias correction, optional QAT) -> convert wrappers to the final integer modules.
A scheme supplies a ``Scheme``: its weight fake-quant (with STE) and its final-module builder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dnnzip.errors import UnsupportedLayerError
from dnnzip.quant.affine import asymmetric_qparams
from dnnzip.quant.calibrate import Calibration, Observer, observe
from dnnzip.quant.fold import QUANTIZABLE, GraphFacts, analyze, fold_batchnorm
from dnnzip.quant.qat import FakeQuantLayer
from dnnzip.registry import Context, fresh_copy

_FLOAT_OK = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.PReLU)
RNN_TYPES = (nn.GRU, nn.LSTM)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """``name`` equals a pattern, lies under one (``features`` covers ``features.0``), or matches
    a ``re:`` pattern."""
    for p in patterns:
        if p.startswith("re:"):
            if re.fullmatch(p[3:], name):
                return True
        elif name == p or name.startswith(p + "."):
            return True
    return False


def find_layers(model: nn.Module, ignore: tuple[str, ...], technique: str
                ) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """(Linear/Conv layers, GRU/LSTM layers) to quantize; other parametric layers are errors."""
    layers, rnns = {}, {}
    for name, mod in model.named_modules():
        if not name or matches(name, ignore):
            continue
        if type(mod) in QUANTIZABLE:
            if getattr(mod, "padding", None).__class__ is str:
                raise UnsupportedLayerError(
                    f"'{name}' ({type(mod).__name__}) uses padding={mod.padding!r}, which "
                    f"{technique} cannot quantize; add '{name}' to ignore= or use numeric padding.")
            layers[name] = mod
        elif type(mod) in RNN_TYPES:
            rnns[name] = mod
        elif (any(True for _ in mod.parameters(recurse=False)) and not isinstance(mod, _FLOAT_OK)
              and not isinstance(mod, QUANTIZABLE + RNN_TYPES)):
            raise UnsupportedLayerError(
                f"'{name}' ({type(mod).__name__}) has no quantization rule in {technique}; "
                f"add it to ignore= (e.g. ignore=('{name}',)) to keep it in float.")
    return layers, rnns


def calib_batches(ctx: Context, n_batches: int) -> list[torch.Tensor]:
    """Up to ``n_batches`` input batches from the calib split (else train), else the example."""
    data = ctx.data
    if data is None:
        return [ctx.example()]
    split = "calib" if len(getattr(data, "calib", []) or []) else "train"
    out = []
    for i, (x, _) in enumerate(data.loader(split, batch_size=ctx.batch_size, shuffle=False,
                                           seed=ctx.seed)):
        if i >= n_batches:
            break
        out.append(x)
    return out or [ctx.example()]


@dataclass(frozen=True)
class Scheme:
    """How one quantization family treats a layer."""

    weight_fq: Callable[[str, nn.Module], Callable[[torch.Tensor], torch.Tensor]]
    finalize: Callable[[str, FakeQuantLayer], nn.Module]
    act_bits: Callable[[str], int]
    input_fn: Callable[[str, nn.Module, Observer], nn.Module | None] = (
        lambda name, layer, observer: None)


def build(model: nn.Module, scheme: Scheme, ctx: Context, *, ignore: tuple[str, ...],
          technique: str, fold_bn: bool = True, method: Calibration = Calibration.MINMAX,
          percentile: float = 99.99, calib_batches_n: int = 4, train: bool = False,
          bias_correction: bool = False, rnn_rule: Callable | None = None) -> nn.Module:
    """Run the pipeline; returns a new model, ``model`` is untouched."""
    model = fresh_copy(model).eval()
    layers, rnns = find_layers(model, ignore, technique)
    if rnns and rnn_rule is None:
        name = next(iter(rnns))
        raise UnsupportedLayerError(
            f"'{name}' ({type(rnns[name]).__name__}) has no rule in {technique}; add it to ignore=.")
    facts = analyze(model)
    if fold_bn:
        facts.bn_after = {k: v for k, v in facts.bn_after.items() if k in layers}
        fold_batchnorm(model, facts)
    layers = {n: model.get_submodule(n) for n in layers}
    batches = calib_batches(ctx, calib_batches_n)
    ins, outs = observe(model, layers, batches)
    ranges = {}
    for name in layers:
        out_obs = outs[name]
        if name in facts.relu_after:  # the output quantizer sits after the fused ReLU
            out_obs = _relu_observer(out_obs)
        bits = scheme.act_bits(name) or 8
        ranges[name] = (ins[name].range(method, percentile=percentile, bits=bits),
                        out_obs.range(method, percentile=percentile, bits=bits))
    wrappers = {}
    for name, layer in layers.items():
        (in_rng, out_rng) = ranges[name]
        producer = facts.producer.get(name)
        if producer in ranges and scheme.act_bits(producer) == scheme.act_bits(name):
            in_rng = ranges[producer][1]
        wrappers[name] = FakeQuantLayer(
            layer, scheme.weight_fq(name, layer), act_bits=scheme.act_bits(name),
            relu=name in facts.relu_after, in_range=in_rng, out_range=out_rng,
            input_fn=scheme.input_fn(name, layer, ins[name]))
        _swap(model, name, wrappers[name])
        relu_name = facts.relu_after.get(name)
        if relu_name:
            _swap(model, relu_name, nn.Identity())
    if bias_correction:
        _correct_bias(model, wrappers, batches)
    if rnn_rule is not None:
        for name, rnn in rnns.items():
            _swap(model, name, rnn_rule(name, rnn))
    if train and ctx.data is not None and ctx.epochs > 0:
        from dnnzip.quant.qat import train as qat_train
        qat_train(model, ctx)
    model.eval()
    for name, wrapper in wrappers.items():
        producer = facts.producer.get(name)
        if producer in wrappers and scheme.act_bits(producer) == scheme.act_bits(name):
            wrapper.in_range.copy_(wrappers[producer].out_range)
        _swap(model, name, scheme.finalize(name, wrapper))
    return model


def set_act(module: nn.Module, wrapper: FakeQuantLayer) -> None:
    """Copy a wrapper's calibrated/trained activation ranges into a final module."""
    bits = wrapper.act_bits or 8
    module.set_act_qparams("in", *asymmetric_qparams(*wrapper.in_range.tolist(), bits=bits))
    module.set_act_qparams("out", *asymmetric_qparams(*wrapper.out_range.tolist(), bits=bits))


def _relu_observer(obs: Observer) -> Observer:
    new = Observer()
    v = obs.values().clamp_min(0)
    new.update(v)
    new.lo, new.hi = 0.0, max(obs.hi, 0.0) if obs.seen else 0.0
    return new


def _correct_bias(model: nn.Module, wrappers: dict[str, FakeQuantLayer], batches) -> None:
    """Empirical bias correction (Nagel et al. 2019, Sec. 4.2): remove the mean per-channel
    output shift that weight quantization causes, measured on the calibration batches."""
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in wrappers}
    handles = [w.register_forward_pre_hook(lambda m, a, _n=n: captured[_n].append(a[0]))
               for n, w in wrappers.items()]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for name, w in wrappers.items():
            x = torch.cat(captured[name])
            shift = w.weight_error_mean(x)
            if w.layer.bias is None:
                w.layer.bias = nn.Parameter(torch.zeros_like(shift))
            w.layer.bias -= shift


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
