"""A learned latency model from layer configurations (FastDeepIoT, Yao et al. [70]).

FastDeepIoT profiles layer configurations on the target runtime and fits a *tree-structured
linear regression*: a regression tree splits the configuration space where the runtime behaves
differently (cache sizes, kernel choices, channel multiples) and each leaf is a linear model of
the layer's work. A model's latency is the sum of its layers' predictions, here followed by a
linear calibration (``a * sum + b + c * layers``, non-negative) fitted on whole models, which
absorbs Python dispatch overhead that per-layer profiling does not see. Functional ops (residual
adds, concatenation, channel shuffles) are not profiled: models built on them (resnet,
shufflenet) are under-predicted (see benchmarks/results/misc.md).

- ``layer_configs(model, example)`` -> the ``LayerConfig`` of every Conv/Linear/RNN and
  element-wise module (BN, activations, pools) on the forward path.
- ``profile_layer(cfg)`` -> measured ms (torch eager, 1 thread, batch 1, 10th percentile).
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

KINDS = ("conv2d", "dwconv2d", "conv1d", "linear", "rnn", "elementwise")
_ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.GELU, nn.Tanh, nn.Sigmoid,
                nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
FORMAT = "dnnzip.latency_model/1"


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

    def split_features(self) -> list[float]:
        """What the tree may split on (the configuration)."""
        return [self.cin, self.cout, self.k, self.stride, self.h * self.w, self.hout * self.wout,
                self.steps, float(self.bias), self.padding,
                _OPS.index(self.op) if self.op in _OPS else -1]

    def linear_features(self) -> list[float]:
        """What a leaf is linear in (the work), in millions."""
        return [self.macs / 1e6, self.params / 1e6, self.in_elems / 1e6, self.out_elems / 1e6]

    def build(self) -> tuple[nn.Module, torch.Tensor]:
        """A module with this configuration and a matching random input."""
        if self.kind in ("conv2d", "dwconv2d"):
            m = nn.Conv2d(self.cin, self.cout, int(math.isqrt(self.k)), stride=self.stride,
                          padding=self.padding, groups=self.groups, bias=self.bias)
            return m, torch.randn(1, self.cin, self.h, self.w)
        if self.kind == "conv1d":
            m = nn.Conv1d(self.cin, self.cout, self.k, stride=self.stride, padding=self.padding,
                          groups=self.groups, bias=self.bias)
            return m, torch.randn(1, self.cin, self.w)
        if self.kind == "linear":
            return nn.Linear(self.cin, self.cout, bias=self.bias), torch.randn(1, self.cin)
        if self.kind == "rnn":
            cls = nn.LSTM if self.op == "LSTM" else nn.GRU
            return cls(self.cin, self.cout, batch_first=True), torch.randn(1, self.steps, self.cin)
        shape = (1, self.cin, self.h, self.w) if self.h > 1 else (1, self.cin, self.w)
        return _elementwise(self.op, self.cin, self.k, self.stride, self.padding,
                            len(shape) - 2), torch.randn(shape)


_OPS = ["Conv2d", "Conv1d", "Linear", "GRU", "LSTM"] + [c.__name__ for c in _ELEMENTWISE]


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


def _config(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> LayerConfig | None:
    op = type(m).__name__
    params = sum(p.numel() for p in m.parameters(recurse=False))
    io = dict(in_elems=x[0].numel(), out_elems=out[0].numel(), params=params,
              bias=getattr(m, "bias", None) is not None)
    pad = getattr(m, "padding", 0)
    pad = pad[0] if isinstance(pad, tuple) else (pad if isinstance(pad, int) else 0)
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        kind = "dwconv2d" if m.groups == m.in_channels > 1 else "conv2d"
        macs = out[0].numel() * (m.in_channels // m.groups) * kh * kw
        return LayerConfig(kind, op, m.in_channels, m.out_channels, kh * kw, m.stride[0],
                           x.shape[2], x.shape[3], out.shape[2], out.shape[3], m.groups,
                           padding=pad, macs=macs, **io)
    if isinstance(m, nn.Conv1d):
        macs = out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0]
        return LayerConfig("conv1d", op, m.in_channels, m.out_channels, m.kernel_size[0],
                           m.stride[0], 1, x.shape[2], 1, out.shape[2], m.groups, padding=pad,
                           macs=macs, **io)
    if isinstance(m, nn.Linear):
        rows = x.numel() // x.shape[-1] // x.shape[0]
        return LayerConfig("linear", op, m.in_features, m.out_features,
                           macs=rows * m.in_features * m.out_features, **io)
    if isinstance(m, (nn.GRU, nn.LSTM)) and m.num_layers == 1 and not m.bidirectional \
            and m.batch_first:
        steps = x.shape[1]
        gates = 3 if isinstance(m, nn.GRU) else 4
        macs = steps * gates * m.hidden_size * (m.input_size + m.hidden_size)
        return LayerConfig("rnn", op, m.input_size, m.hidden_size, steps=steps, macs=macs, **io)
    if isinstance(m, _ELEMENTWISE):
        spatial = x.shape[2:]
        h, w = (spatial[0], spatial[1]) if len(spatial) == 2 else (1, spatial[-1] if spatial else 1)
        k = getattr(m, "kernel_size", 1)
        k = k[0] if isinstance(k, tuple) else (k if isinstance(k, int) else 1)
        s = getattr(m, "stride", 1)
        s = s[0] if isinstance(s, tuple) else (s if isinstance(s, int) else 1)
        osp = out.shape[2:]
        ho, wo = (osp[0], osp[1]) if len(osp) == 2 else (1, osp[-1] if osp else 1)
        return LayerConfig("elementwise", op, x.shape[1] if x.dim() > 2 else x.shape[-1], 0,
                           k, s, h, w, ho, wo, padding=pad, macs=0, **io)
    return None


def layer_configs(model: nn.Module, example: torch.Tensor) -> list[LayerConfig]:
    """The configuration of every profiled layer on ``model``'s forward path (batch 1).

    A module with parameters and no latency rule is an UnsupportedLayerError."""
    found: list[tuple[str, LayerConfig]] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.GRU, nn.LSTM) + _ELEMENTWISE):
            def hook(mod, inp, out, name=name):
                cfg = _config(mod, inp[0], _first(out))
                if cfg is None:
                    raise UnsupportedLayerError(
                        f"'{name}' ({type(mod).__name__}) has no latency rule (multi-layer or "
                        "bidirectional RNNs are not modelled); profile it as a single layer.")
                found.append((name, cfg))
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return [c for _, c in found]


def _time_ms(fn: nn.Module, x: torch.Tensor, *, repeats: int, warmup: int,
             percentile: float) -> float:
    """``percentile`` of ``repeats`` timed calls (torch eager, 1 thread, inference mode).

    A low percentile (default 10) rather than the median: on a shared machine the upper part of
    the distribution measures the other processes, not the layer."""
    from dnnzip.runtime.torch_rt import torch_threads

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
            lr = LinearRegression(positive=True).fit(L[idx], y[idx], sample_weight=1 / y[idx])
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

    def __init__(self, trees: dict[str, _ModelTree],
                 calibration: tuple[float, ...] = (1.0, 0.0, 0.0), meta: dict | None = None):
        self.trees, self.calibration, self.meta = trees, tuple(calibration), dict(meta or {})

    @classmethod
    def fit(cls, samples: list[tuple[LayerConfig, float]], *, max_depth: int = 3,
            min_leaf: int = 6) -> "LatencyModel":
        """Fit one tree per layer kind from (config, measured ms) pairs."""
        if not samples:
            raise ConfigError("LatencyModel.fit needs profiled samples; got none. "
                              "Profile layers with profile_layer(cfg).")
        trees = {}
        for kind in KINDS:
            rows = [(c, t) for c, t in samples if c.kind == kind]
            if not rows:
                continue
            S = np.array([c.split_features() for c, _ in rows], float)
            L = np.array([c.linear_features() for c, _ in rows], float)
            y = np.array([t for _, t in rows], float)
            leaf = max(2, min(min_leaf, len(rows) // 2))
            trees[kind] = _ModelTree.fit(S, L, y, max_depth=max_depth, min_leaf=leaf)
        return cls(trees, meta={"samples": len(samples), "runtime": "torch", "threads": 1,
                                "torch": torch.__version__})

    def predict_layer(self, cfg: LayerConfig) -> float:
        tree = self.trees.get(cfg.kind)
        if tree is None:
            raise UnsupportedLayerError(
                f"the latency model has no '{cfg.kind}' layers ({cfg.op}); fit it with "
                f"profiled {cfg.kind} configurations. Known kinds: {sorted(self.trees)}.")
        return max(0.0, tree.predict_one(cfg.split_features(), cfg.linear_features()))

    def predict_configs(self, configs: list[LayerConfig]) -> float:
        a, b, c = self.calibration
        return a * sum(self.predict_layer(cfg) for cfg in configs) + b + c * len(configs)

    def predict(self, model: nn.Module, example: torch.Tensor) -> float:
        """Predicted p50 latency (ms, batch 1) of ``model`` on the profiled runtime."""
        return self.predict_configs(layer_configs(model, example))

    def calibrate(self, measured: list[tuple[list[LayerConfig], float]]) -> "LatencyModel":
        """Fit ``a, b, c`` in ``a * sum(layers) + b + c * n_layers`` on whole models (relative
        least squares; c is the per-layer dispatch cost isolated profiling does not see)."""
        if len(measured) < 3:
            raise ConfigError("calibrate needs at least 3 measured models.")
        raw = np.array([sum(self.predict_layer(c) for c in cfgs) for cfgs, _ in measured])
        n = np.array([len(cfgs) for cfgs, _ in measured], float)
        y = np.array([t for _, t in measured], float)
        from scipy.optimize import nnls

        A = np.stack([raw, np.ones_like(raw), n], 1) / y[:, None]
        a, b, c = nnls(A, np.ones_like(y))[0]  # non-negative: no model gets a negative cost
        self.calibration = (float(a), float(b), float(c))
        return self

    # -- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "calibration": list(self.calibration), "meta": self.meta,
                "trees": {k: t.to_dict() for k, t in self.trees.items()}}

    @classmethod
    def from_dict(cls, d: Any, where: str = "<dict>") -> "LatencyModel":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise FormatError(f"{where}: not a dnnzip latency model (expected format {FORMAT!r}).")
        try:
            trees = {k: _ModelTree.from_dict(v) for k, v in d["trees"].items() if k in KINDS}
            cal = [float(v) for v in d["calibration"]]
            if len(cal) != 3:
                raise ValueError(f"calibration needs 3 numbers, got {len(cal)}")
            a, b, c = cal
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where}: malformed latency model ({exc}).") from exc
        return cls(trees, (a, b, c), d.get("meta"))

    def save(self, path: str | os.PathLike) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(tmp, path)

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
