"""A learned latency model from layer configurations (FastDeepIoT, Yao et al. [70]).

FastDeepIoT profiles layer configurations on the target runtime and fits a *tree-structured
linear regression*: a regression tree splits the configuration space where the runtime behaves
differently (cache sizes, kernel choices, channel multiples) and each leaf is a linear model of
the layer's work (MACs, parameters, input/output elements, time steps). One tree per layer type
(GRU and LSTM apart); leaves are fitted by non-negative *relative* least squares (weights
1/t^2), since the error that matters, MAPE, is relative. A model's latency is the sum of its
layers' predictions, followed by a linear calibration fitted on whole models (non-negative
least squares on relative errors):
``sum_k a_k * (sum of kind k's predictions) + b + c * ops + d * calls``. ``a_k`` is how much
slower a layer of kind k runs inside a model than profiled alone, where its weights and input
stay hot in the caches across the repeated calls (on this VM convs come out ~1.3-1.6x, linear
~1.1-1.5x, RNNs and element-wise ~0.7-1.1x, see benchmarks/results/misc.md; ``SCALE_GROUPS``
ties kinds together as an option); ``b`` is the per-model
runtime call, ``c`` the dispatch cost per op, ``d`` the Python cost of each container module
call (residual blocks, shuffle units).

What is profiled, in forward order (``layer_configs``):
- every Conv1d/Conv2d (dense, grouped, depthwise), Linear, GRU/LSTM (a stacked RNN counts as
  one config per layer) and element-wise module (BN, activations, pools), with the batch the
  layer really sees (DeepSense's per-interval convs run on T intervals for one input);
- every *functional* op called outside those modules (residual adds, concatenations, the copy of
  a channel shuffle, reshapes/flatten, means), by category: ``binary``, ``cat``, ``copy``,
  ``view``, ``reduce``, ``unary``; a copy is a reshape/contiguous whose result does not share
  its input's storage;
- every other module call (``kind="call"``; no work of its own, only ``d``).
A heavy op (linear, conv, matmul, ...) called functionally outside a profiled module raises
UnsupportedLayerError: it would otherwise be counted as free.

Deviation from the paper: FastDeepIoT's features are per-layer-type configuration parameters on
mobile runtimes (TensorFlow); here the runtime is torch eager on CPU, where per-op Python/ATen
dispatch (microseconds) is a large share of small models, hence the functional ops and the
call term; and the per-kind in-model scales, because layers profiled alone run with hot caches
(the paper profiles on the device too, but its calibration is not described per kind).

- ``profile_layer(cfg)`` -> measured ms (torch eager, 1 thread, low percentile).
- ``LatencyModel.fit(samples)`` / ``.calibrate(models)`` / ``.predict(model, example)``;
  ``save`` / ``load`` write and read JSON (no pickle): tree arrays and leaf coefficients.
- ``mape(pred, true)``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from dnnzip.errors import ConfigError, FormatError, UnsupportedLayerError
from dnnzip.io import atomic_write

KINDS = ("conv2d", "dwconv2d", "conv1d", "linear", "rnn", "elementwise", "functional")
CALL = "call"  # a non-profiled module call: no tree, only the calibration's per-call cost
# kinds that share one in-model scale in ``calibrate(scales="groups")``: with a scale per kind
# (the default) the functional ops' own scale comes out 5-7x and moves between runs
SCALE_GROUPS = {"conv": ("conv2d", "dwconv2d", "conv1d"), "linear": ("linear",), "rnn": ("rnn",),
                "memory": ("elementwise", "functional")}
TREES = tuple(k for k in KINDS if k != "rnn") + ("rnn.GRU", "rnn.LSTM", "rnn")  # "rnn": /1 files
_ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.GELU, nn.Tanh, nn.Sigmoid,
                nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
FORMAT = "dnnzip.latency_model/2"
_READS = ("dnnzip.latency_model/1", FORMAT)  # /1: [a, b, c] for all kinds, no functional ops
FUNCTIONAL = ("binary", "cat", "copy", "view", "reduce", "unary")


@dataclass(frozen=True)
class LayerConfig:
    """One layer's configuration (per sample, batch 1). ``op`` names the torch module."""

    kind: str
    op: str
    cin: int
    cout: int
    k: int = 1
    stride: int = 1
    h: int = 1
    w: int = 1
    hout: int = 1
    wout: int = 1
    groups: int = 1
    steps: int = 1
    bias: bool = True
    padding: int = 0
    macs: int = 0
    params: int = 0
    in_elems: int = 0
    out_elems: int = 0
    batch: int = 1  # leading dim the layer sees when the model runs one input

    def split_features(self) -> list[float]:
        """What the tree may split on (the configuration)."""
        return [self.cin, self.cout, self.k, self.stride, self.h * self.w, self.hout * self.wout,
                self.steps, float(self.bias), self.padding,
                _OPS.index(self.op) if self.op in _OPS else -1, self.groups, self.batch]

    def linear_features(self) -> list[float]:
        """What a leaf is linear in: the work, in millions, and the time steps in thousands
        (torch's CPU GRU pays a fixed cost per step, whatever its width)."""
        return [self.macs / 1e6, self.params / 1e6, self.in_elems / 1e6, self.out_elems / 1e6,
                self.steps / 1e3]

    def tree_key(self) -> str:
        """Which tree predicts this config: one per layer type (GRU and LSTM apart: their
        kernels differ, e.g. the LSTM is fused on CPU and the GRU loops per step)."""
        return f"rnn.{self.op}" if self.kind == "rnn" else self.kind

    def build(self) -> tuple[Any, Any]:
        """A module (or, for functional ops, a callable) with this configuration and a matching
        random input."""
        n = self.batch
        if self.kind in ("conv2d", "dwconv2d"):
            m = nn.Conv2d(self.cin, self.cout, int(math.isqrt(self.k)), stride=self.stride,
                          padding=self.padding, groups=self.groups, bias=self.bias)
            return m, torch.randn(n, self.cin, self.h, self.w)
        if self.kind == "conv1d":
            m = nn.Conv1d(self.cin, self.cout, self.k, stride=self.stride, padding=self.padding,
                          groups=self.groups, bias=self.bias)
            return m, torch.randn(n, self.cin, self.w)
        if self.kind == "linear":
            return nn.Linear(self.cin, self.cout, bias=self.bias), torch.randn(n, self.cin)
        if self.kind == "rnn":
            cls = nn.LSTM if self.op == "LSTM" else nn.GRU
            return (cls(self.cin, self.cout, batch_first=True, bias=self.bias),
                    torch.randn(n, self.steps, self.cin))
        if self.kind == "functional":
            return _functional(self.op, self.cin, self.in_elems, self.out_elems)
        if self.kind == CALL:
            return nn.Identity(), torch.randn(1)
        shape = (n, self.cin, self.h, self.w) if self.h > 1 else (n, self.cin, self.w)
        return _elementwise(self.op, self.cin, self.k, self.stride, self.padding,
                            len(shape) - 2), torch.randn(shape)


# append only: a saved tree splits on the index of ``op`` in this list
_OPS = ["Conv2d", "Conv1d", "Linear", "GRU", "LSTM"] + [c.__name__ for c in _ELEMENTWISE] \
    + list(FUNCTIONAL)


def _functional(op: str, parts: int, in_elems: int, out_elems: int) -> tuple[Any, Any]:
    """A callable and input reproducing functional op category ``op`` on ``out_elems``."""
    e = max(1, out_elems)
    if op == "binary":
        other = torch.randn(e)
        return (lambda x: x + other), torch.randn(e)
    if op == "cat":
        k = max(1, parts)
        return (lambda xs: torch.cat(xs, 1)), [torch.randn(1, -(-e // k)) for _ in range(k)]
    if op == "copy":  # materialising a transposed view, as a channel shuffle does
        return (lambda x: x.contiguous()), torch.randn(1, 3, -(-e // 3)).transpose(1, 2)
    if op == "reduce":
        return (lambda x: x.mean(1)), torch.randn(e, max(1, in_elems // e))
    if op == "unary":
        return torch.relu, torch.randn(e)
    return (lambda x: x.view(-1)), torch.randn(e)


_SKIP = {"__get__", "__set__", "size", "dim", "numel", "__len__", "__iter__", "is_contiguous",
         "stride", "element_size", "__format__", "__repr__", "tolist", "item", "__bool__",
         "__index__", "__int__", "__float__", "data_ptr", "untyped_storage", "storage_offset",
         "requires_grad_", "detach", "__hash__", "__eq__", "__contains__", "type", "float",
         "is_floating_point", "get_device", "ndimension", "nelement"}
_HEAVY = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
          "matmul", "mm", "bmm", "addmm", "einsum", "gru", "lstm", "rnn_tanh", "embedding",
          "__matmul__", "baddbmm", "scaled_dot_product_attention"}
_BINARY = {"add", "__add__", "__radd__", "__iadd__", "add_", "mul", "__mul__", "__rmul__",
           "__imul__", "mul_", "sub", "__sub__", "__rsub__", "__isub__", "div", "__truediv__",
           "__rtruediv__", "where", "maximum", "minimum"}
_CAT = {"cat", "concat", "concatenate", "stack", "hstack", "vstack"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "norm", "logsumexp", "avg_pool1d",
           "avg_pool2d", "max_pool1d", "max_pool2d", "adaptive_avg_pool1d",
           "adaptive_avg_pool2d", "adaptive_max_pool2d", "max_pool2d_with_indices"}
_UNARY = {"relu", "relu_", "sigmoid", "tanh", "gelu", "softmax", "log_softmax", "hardtanh",
          "relu6", "dropout", "clamp", "clamp_", "neg", "__neg__", "exp", "abs", "silu",
          "batch_norm", "layer_norm", "hardswish", "leaky_relu"}


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _functional_config(name: str, args: tuple, kwargs: dict, out: Any) -> LayerConfig | None:
    if name in _SKIP or name.startswith("_") and name not in _BINARY and not name.endswith("__"):
        return None
    outs = _tensors(out)
    if not outs:
        return None
    ins = _tensors(list(args) + list(kwargs.values()))
    if name in _HEAVY:
        raise UnsupportedLayerError(
            f"functional '{name}' is called outside a profiled module; the latency model would "
            "count it as free. Wrap it in the matching nn module (nn.Linear, nn.Conv2d, ...).")
    in_e, out_e = sum(t.numel() for t in ins), sum(t.numel() for t in outs)
    if name in _BINARY:
        op = "binary"
    elif name in _CAT:
        op = "cat"
    elif name in _REDUCE:
        op = "reduce"
    elif name in _UNARY:
        op = "unary"
    else:  # reshape/view/flatten/transpose/getitem/contiguous...: a view unless it copied
        base = ins[0].untyped_storage().data_ptr() if ins else None
        op = "view" if base is not None and outs[0].untyped_storage().data_ptr() == base \
            else "copy"
    return LayerConfig("functional", op, len(ins), 0, in_elems=in_e, out_elems=out_e)


def _elementwise(op: str, c: int, k: int, stride: int, pad: int, dims: int) -> nn.Module:
    bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    table = {"BatchNorm2d": lambda: bn(c), "BatchNorm1d": lambda: bn(c),
             "MaxPool2d": lambda: nn.MaxPool2d(k, stride, pad),
             "MaxPool1d": lambda: nn.MaxPool1d(k, stride, pad),
             "AvgPool2d": lambda: nn.AvgPool2d(k, stride, pad),
             "AvgPool1d": lambda: nn.AvgPool1d(k, stride, pad),
             "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(1),
             "AdaptiveAvgPool1d": lambda: nn.AdaptiveAvgPool1d(1)}
    if op in table:
        return table[op]().eval()
    return getattr(nn, op)()


def _first(obj: Any) -> torch.Tensor:
    return obj[0] if isinstance(obj, (tuple, list)) else obj


def _config(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> list[LayerConfig] | None:
    """The config(s) of profiled module ``m`` seen on input ``x`` (whole tensors: the model runs
    one input, so dim 0 is the batch the layer itself sees)."""
    op = type(m).__name__
    params = sum(p.numel() for p in m.parameters(recurse=False))
    io = dict(in_elems=x.numel(), out_elems=out.numel(), params=params,
              bias=getattr(m, "bias", None) is not None)
    pad = getattr(m, "padding", 0)
    pad = pad[0] if isinstance(pad, tuple) else (pad if isinstance(pad, int) else 0)
    n = x.shape[0] if x.dim() > 1 else 1
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        kind = "dwconv2d" if m.groups == m.in_channels > 1 else "conv2d"
        macs = out.numel() * (m.in_channels // m.groups) * kh * kw
        return [LayerConfig(kind, op, m.in_channels, m.out_channels, kh * kw, m.stride[0],
                            x.shape[2], x.shape[3], out.shape[2], out.shape[3], m.groups,
                            padding=pad, macs=macs, batch=n, **io)]
    if isinstance(m, nn.Conv1d):
        macs = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0]
        return [LayerConfig("conv1d", op, m.in_channels, m.out_channels, m.kernel_size[0],
                            m.stride[0], 1, x.shape[2], 1, out.shape[2], m.groups, padding=pad,
                            macs=macs, batch=n, **io)]
    if isinstance(m, nn.Linear):
        rows = x.numel() // x.shape[-1]
        return [LayerConfig("linear", op, m.in_features, m.out_features,
                            macs=rows * m.in_features * m.out_features, batch=rows, **io)]
    if isinstance(m, (nn.GRU, nn.LSTM)) and not m.bidirectional and not getattr(m, "proj_size", 0):
        if x.dim() == 2:  # unbatched (L, C)
            steps, n = x.shape[0], 1
        else:
            steps, n = (x.shape[1], x.shape[0]) if m.batch_first else (x.shape[0], x.shape[1])
        gates = 3 if isinstance(m, nn.GRU) else 4
        h, cfgs = m.hidden_size, []
        for layer in range(m.num_layers):  # a stacked RNN runs its layers one after another
            cin = m.input_size if layer == 0 else h
            p_l = sum(getattr(m, f"{w}_l{layer}").numel() for w in
                      (("weight_ih", "weight_hh", "bias_ih", "bias_hh") if m.bias else
                       ("weight_ih", "weight_hh")))
            cfgs.append(LayerConfig("rnn", op, cin, h, steps=steps, bias=m.bias,
                                    macs=n * steps * gates * h * (cin + h), params=p_l,
                                    in_elems=n * steps * cin, out_elems=n * steps * h, batch=n))
        return cfgs
    if isinstance(m, _ELEMENTWISE):
        spatial = x.shape[2:]
        h, w = (spatial[0], spatial[1]) if len(spatial) == 2 else (1, spatial[-1] if spatial else 1)
        k = getattr(m, "kernel_size", 1)
        k = k[0] if isinstance(k, tuple) else (k if isinstance(k, int) else 1)
        s = getattr(m, "stride", 1)
        s = s[0] if isinstance(s, tuple) else (s if isinstance(s, int) else 1)
        osp = out.shape[2:]
        ho, wo = (osp[0], osp[1]) if len(osp) == 2 else (1, osp[-1] if osp else 1)
        return [LayerConfig("elementwise", op, x.shape[1] if x.dim() > 2 else x.shape[-1], 0,
                            k, s, h, w, ho, wo, padding=pad, macs=0,
                            batch=n if x.dim() > 2 else 1, **io)]
    return None


_PROFILED = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.GRU, nn.LSTM) + _ELEMENTWISE


def layer_configs(model: nn.Module, example: torch.Tensor, *,
                  functional: bool = True) -> list[LayerConfig]:
    """The configuration of every profiled layer, functional op and module call on ``model``'s
    forward path for one input (``example[:1]``), in order (see the module docstring).

    ``functional=False``: profiled modules only (the FastDeepIoT per-layer view). A module with
    parameters and no latency rule (bidirectional RNN) or a heavy functional op outside a
    profiled module is an UnsupportedLayerError."""
    from torch.overrides import TorchFunctionMode

    found: list[LayerConfig] = []
    state = {"depth": 0, "busy": False}
    hooks = []

    def enter(mod, inp, name=""):
        if state["depth"] == 0 and not isinstance(mod, _PROFILED) and name and functional:
            found.append(LayerConfig(CALL, type(mod).__name__, 0, 0))
        if isinstance(mod, _PROFILED):
            state["depth"] += 1

    def leave(mod, inp, out, name=""):
        state["depth"] -= 1
        if state["depth"]:
            return
        state["busy"] = True
        try:
            cfgs = _config(mod, inp[0], _first(out))
        finally:
            state["busy"] = False
        if cfgs is None:
            raise UnsupportedLayerError(
                f"'{name}' ({type(mod).__name__}) has no latency rule (bidirectional or "
                "projected RNNs are not modelled); profile it as separate layers.")
        found.extend(cfgs)

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if state["depth"] == 0 and not state["busy"]:
                state["busy"] = True
                try:
                    cfg = _functional_config(getattr(func, "__name__", ""), args, kwargs, out)
                finally:
                    state["busy"] = False
                if cfg is not None:
                    found.append(cfg)
            return out

    for name, m in model.named_modules():
        hooks.append(m.register_forward_pre_hook(lambda mod, i, name=name: enter(mod, i, name)))
        if isinstance(m, _PROFILED):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: leave(mod, i, o, name)))
    one = example[:1]
    try:
        with torch.no_grad():
            if functional:
                with Record():
                    model.eval()(one)
            else:
                model.eval()(one)
    finally:
        for h in hooks:
            h.remove()
    return found


def _time_ms(fn: Any, x: Any, *, repeats: int, warmup: int, percentile: float) -> float:
    """``percentile`` of ``repeats`` timed calls (torch eager, 1 thread, inference mode).

    A low percentile (default 10) rather than the median: on a shared machine the upper part of
    the distribution measures the other processes, not the layer."""
    from dnnzip.runtime.torch_rt import torch_threads

    if isinstance(fn, nn.Module):
        fn = fn.eval()
    times = np.empty(repeats)
    with torch_threads(1), torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        for i in range(repeats):
            t0 = time.perf_counter_ns()
            fn(x)
            times[i] = time.perf_counter_ns() - t0
    return float(np.percentile(times, percentile)) / 1e6


def profile_layer(cfg: LayerConfig, *, repeats: int = 30, warmup: int = 5,
                  percentile: float = 10.0) -> float:
    """Measured latency (ms, low percentile) of one layer with configuration ``cfg``."""
    m, x = cfg.build()
    return _time_ms(m, x, repeats=repeats, warmup=warmup, percentile=percentile)


def measure_model(model: nn.Module, example: torch.Tensor, *, repeats: int = 30,
                  warmup: int = 5, percentile: float = 10.0) -> float:
    """Measured latency (ms, low percentile) of ``model`` on ``example[:1]``; the input model
    is not modified (a copy is timed)."""
    import copy

    return _time_ms(copy.deepcopy(model), example[:1], repeats=repeats, warmup=warmup,
                    percentile=percentile)


def mape(pred: Iterable[float], true: Iterable[float]) -> float:
    """Mean absolute percentage error, as a fraction (0.1 = 10 %)."""
    p, t = np.asarray(list(pred), float), np.asarray(list(true), float)
    if len(t) == 0 or np.any(t <= 0):
        raise ConfigError("mape needs at least one true latency, all > 0.")
    return float(np.mean(np.abs(p - t) / t))


class _ModelTree:
    """Regression tree on the configuration, non-negative linear model of the work per leaf."""

    def __init__(self, tree: dict, leaves: dict[int, list[float]]):
        self.tree, self.leaves = tree, leaves

    @classmethod
    def fit(cls, S: np.ndarray, L: np.ndarray, y: np.ndarray, *, max_depth: int,
            min_leaf: int) -> "_ModelTree":
        from sklearn.linear_model import LinearRegression
        from sklearn.tree import DecisionTreeRegressor

        dt = DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=min_leaf,
                                   random_state=0).fit(S, y)
        t = dt.tree_
        tree = {"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                "feature": t.feature.tolist(), "threshold": t.threshold.tolist()}
        leaf_of = dt.apply(S)
        leaves = {}
        for leaf in np.unique(leaf_of):
            idx = leaf_of == leaf
            # relative least squares (weights 1/y^2): the error that matters is relative
            lr = LinearRegression(positive=True).fit(L[idx], y[idx], sample_weight=y[idx] ** -2.0)
            leaves[int(leaf)] = [float(lr.intercept_)] + [float(c) for c in lr.coef_]
        return cls(tree, leaves)

    def predict_one(self, s: list[float], lin: list[float]) -> float:
        node, t = 0, self.tree
        while t["left"][node] != -1:
            node = t["left"][node] if s[t["feature"][node]] <= t["threshold"][node] \
                else t["right"][node]
        c = self.leaves[node]
        return c[0] + sum(a * b for a, b in zip(c[1:], lin))

    def to_dict(self) -> dict:
        return {"tree": self.tree, "leaves": {str(k): v for k, v in self.leaves.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "_ModelTree":
        return cls(d["tree"], {int(k): v for k, v in d["leaves"].items()})


class LatencyModel:
    """Per-kind model trees + whole-model calibration. See the module docstring."""

    def __init__(self, trees: dict[str, _ModelTree], calibration: dict | None = None,
                 meta: dict | None = None):
        cal = dict(calibration or {})
        scale = {k: 1.0 for k in KINDS}
        scale.update({k: float(v) for k, v in dict(cal.get("scale", {})).items()})
        self.trees, self.meta = trees, dict(meta or {})
        self.calibration = {"scale": scale, "model": float(cal.get("model", 0.0)),
                            "op": float(cal.get("op", 0.0)), "call": float(cal.get("call", 0.0))}

    @classmethod
    def fit(cls, samples: list[tuple[LayerConfig, float]], *, max_depth: int = 6,
            min_leaf: int = 6) -> "LatencyModel":
        """Fit one tree per layer kind from (config, measured ms) pairs (``call`` configs carry
        no work and are skipped: the calibration prices them)."""
        if not samples:
            raise ConfigError("LatencyModel.fit needs profiled samples; got none. "
                              "Profile layers with profile_layer(cfg).")
        trees = {}
        for key in TREES[:-1]:
            rows = [(c, t) for c, t in samples if c.tree_key() == key]
            if not rows:
                continue
            S = np.array([c.split_features() for c, _ in rows], float)
            L = np.array([c.linear_features() for c, _ in rows], float)
            y = np.array([t for _, t in rows], float)
            leaf = max(2, min(min_leaf, len(rows) // 2))
            trees[key] = _ModelTree.fit(S, L, y, max_depth=max_depth, min_leaf=leaf)
        return cls(trees, meta={"samples": len(samples), "runtime": "torch", "threads": 1,
                                "torch": torch.__version__})

    def predict_layer(self, cfg: LayerConfig) -> float:
        if cfg.kind == CALL:
            return 0.0
        tree = self.trees.get(cfg.tree_key(), self.trees.get(cfg.kind))
        if tree is None:
            raise UnsupportedLayerError(
                f"the latency model has no '{cfg.kind}' layers ({cfg.op}); fit it with "
                f"profiled {cfg.kind} configurations. Known kinds: {sorted(self.trees)}.")
        return max(0.0, tree.predict_one(cfg.split_features(), cfg.linear_features()))

    def _terms(self, configs: list[LayerConfig]) -> np.ndarray:
        """[per-kind sums of the layer predictions..., 1, ops, calls]: the calibration's terms."""
        raw = dict.fromkeys(KINDS, 0.0)
        calls = 0
        for c in configs:
            if c.kind == CALL:
                calls += 1
            else:
                raw[c.kind] += self.predict_layer(c)
        return np.array([raw[k] for k in KINDS] + [1.0, len(configs) - calls, calls], float)

    def _coef(self) -> np.ndarray:
        c = self.calibration
        return np.array([c["scale"][k] for k in KINDS] + [c["model"], c["op"], c["call"]])

    def predict_configs(self, configs: list[LayerConfig]) -> float:
        return float(self._coef() @ self._terms(configs))

    def predict(self, model: nn.Module, example: torch.Tensor) -> float:
        """Predicted latency (ms, batch 1, low percentile) of ``model`` on the profiled
        runtime."""
        return self.predict_configs(layer_configs(model, example))

    def calibrate(self, measured: list[tuple[list[LayerConfig], float]], *,
                  scales: str = "kind") -> "LatencyModel":
        """Fit the calibration (module docstring) on whole models: non-negative least squares
        on relative errors, so no kind or call gets a negative cost. ``scales``: "kind" (one
        scale per layer kind), "groups" (one per ``SCALE_GROUPS`` group: fewer, steadier
        coefficients, but 0.5-2.5 points worse held-out in the benchmark) or "one" (a single
        scale, the previous model). A group that none of the models contains keeps scale 1."""
        if len(measured) < 4:
            raise ConfigError("calibrate needs at least 4 measured models.")
        options = {"groups": list(SCALE_GROUPS.values()), "kind": [(k,) for k in KINDS],
                   "one": [KINDS]}
        if scales not in options:
            raise ConfigError(f"calibrate: scales must be one of {sorted(options)}; "
                              f"got {scales!r}.")
        T = np.array([self._terms(cfgs) for cfgs, _ in measured])
        n = len(KINDS)
        groups = options[scales]
        A = np.concatenate([np.stack([T[:, [KINDS.index(k) for k in g]].sum(1) for g in groups],
                                     1), T[:, n:]], 1)
        y = np.array([t for _, t in measured], float)
        from scipy.optimize import nnls

        used = np.flatnonzero(A.any(0))
        coef = np.ones(A.shape[1])
        coef[len(groups):] = 0.0
        coef[used] = nnls(A[:, used] / y[:, None], np.ones_like(y))[0]
        g = len(groups)
        self.calibration = {"scale": {k: float(coef[i]) for i, grp in enumerate(groups)
                                      for k in grp},
                            "model": float(coef[g]), "op": float(coef[g + 1]),
                            "call": float(coef[g + 2])}
        return self

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "calibration": self.calibration, "meta": self.meta,
                "trees": {k: t.to_dict() for k, t in self.trees.items()}}

    @classmethod
    def from_dict(cls, d: Any, where: str = "<dict>") -> "LatencyModel":
        if not isinstance(d, dict) or d.get("format") not in _READS:
            raise FormatError(f"{where}: not a dnnzip latency model (expected format {FORMAT!r}).")
        try:
            trees = {k: _ModelTree.from_dict(v) for k, v in d["trees"].items() if k in TREES}
            cal = d["calibration"]
            if d["format"] == "dnnzip.latency_model/1":  # [a, b, c]: one scale, c per layer
                a, b, c = (float(v) for v in cal)
                cal = {"scale": dict.fromkeys(KINDS, a), "model": b, "op": c}
            elif not isinstance(cal, dict) or not isinstance(cal.get("scale", {}), dict):
                raise ValueError("calibration must be a mapping with a 'scale' mapping")
            model = cls(trees, cal, d.get("meta"))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: malformed latency model ({exc}).") from exc
        return model

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, json.dumps(self.to_dict()).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyModel":
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise FormatError(f"'{path}': cannot read latency model: {exc}") from exc
        return cls.from_dict(d, str(path))


def config_dict(cfg: LayerConfig) -> dict:
    return asdict(cfg)
