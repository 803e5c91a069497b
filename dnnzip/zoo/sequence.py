"""Classifiers for sensor time series shaped (N, C, L): C channels (sensor axes), L time steps.
A 2-D input (N, L) is read as one channel. Defaults fit mnist1d (1 x 40, 10 classes).

- ``CNN1d``: three Conv1d-BN-ReLU layers (two max-pools), global average pooling, linear.
- ``RNNClassifier`` (``gru`` / ``lstm``): the L steps of C features go through a GRU or LSTM;
  the last hidden state (or the mean over steps) feeds a linear layer. These are the targets of
  ``factor.svd`` on recurrent gates (survey: low-rank factorization of RNN weights).
- ``DeepSense`` (Yao et al. 2017, "DeepSense", Sec. 3): the series is cut into T intervals; the
  same Conv1d stack extracts per-interval features, a stacked GRU runs over the intervals, and
  the mean of its outputs feeds a linear layer.
  Deviations: one sensor group (the paper's per-sensor convs + merge conv reduce to one stack when
  all axes come from one sensor); per-interval features are average-pooled over the interval
  instead of flattened, so the GRU input equals the conv width and channel pruning of the last
  conv maps one-to-one onto GRU inputs; no frequency-domain (FFT) pre-processing.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import (ZooModule, check_choice, check_float, check_int, fail,
                                scaled)


def _as_ncl(x: Tensor) -> Tensor:
    return x.unsqueeze(1) if x.dim() == 2 else x


@spec_module("zoo.CNN1d")
class CNN1d(ZooModule):
    """``features`` (conv{i}/bn{i}/relu{i}/pool{i}) -> pool -> fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: list[int] = (32, 64, 64), pools: list[bool] = (True, True, False)):
        super().__init__()
        self._record(in_channels=in_channels, num_classes=num_classes, widths=list(widths),
                     pools=list(pools))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for i, (w, p) in enumerate(zip(widths, pools), start=1):
            k = 5 if i < len(widths) else 3
            layers[f"conv{i}"] = nn.Conv1d(c, w, k, padding=k // 2, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm1d(w)
            layers[f"relu{i}"] = nn.ReLU()
            if p:
                layers[f"pool{i}"] = nn.MaxPool1d(2)
            c = w
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(_as_ncl(x))).flatten(1))


@spec_module("zoo.RNNClassifier")
class RNNClassifier(ZooModule):
    """``rnn`` (GRU or LSTM, batch_first) -> last step or mean over steps -> ``fc``."""

    def __init__(self, cell: str = "gru", in_channels: int = 1, num_classes: int = 10,
                 hidden: int = 64, layers: int = 1, pool: str = "last"):
        super().__init__()
        self._record(cell=cell, in_channels=in_channels, num_classes=num_classes, hidden=hidden,
                     layers=layers, pool=pool)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.pool = pool
        self.rnn = rnn(in_channels, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(_as_ncl(x).transpose(1, 2))  # (N, L, C) -> (N, L, hidden)
        feat = out[:, -1] if self.pool == "last" else out.mean(dim=1)
        return self.fc(feat)


@spec_module("zoo.DeepSense")
class DeepSense(ZooModule):
    """(N, C, T*tau) -> per-interval ``conv`` stack -> mean over tau -> ``rnn`` over T -> ``fc``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, intervals: int = 8,
                 conv_channels: int = 32, conv_layers: int = 3, hidden: int = 64,
                 layers: int = 2):
        super().__init__()
        self._record(in_channels=in_channels, num_classes=num_classes, intervals=intervals,
                     conv_channels=conv_channels, conv_layers=conv_layers, hidden=hidden,
                     layers=layers)
        self.intervals = intervals
        conv: OrderedDict[str, nn.Module] = OrderedDict()
        c = in_channels
        for i in range(1, conv_layers + 1):
            conv[f"conv{i}"] = nn.Conv1d(c, conv_channels, 3, padding=1, bias=False)
            conv[f"bn{i}"] = nn.BatchNorm1d(conv_channels)
            conv[f"relu{i}"] = nn.ReLU()
            c = conv_channels
        self.conv = nn.Sequential(conv)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.rnn = nn.GRU(c, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = _as_ncl(x)
        n, c, length = x.shape
        t = self.intervals
        x = x.reshape(n, c, t, length // t).transpose(1, 2).reshape(n * t, c, length // t)
        feat = self.pool(self.conv(x)).reshape(n, t, -1)  # (N, T, conv width)
        out, _ = self.rnn(feat)
        return self.fc(out.mean(dim=1))


def _series(name: str, num_classes, in_channels, length, min_length: int = 1) -> None:
    check_int(name, "num_classes", num_classes)
    check_int(name, "in_channels", in_channels)
    check_int(name, "length", length, low=min_length)


def build_cnn1d(*, num_classes: int = 10, in_channels: int = 1, length: int = 40,
                width: float = 1.0) -> nn.Module:
    """1-D CNN; ``width`` scales the conv widths 32-64-64. Needs ``length`` >= 4 (two pools)."""
    _series("cnn1d", num_classes, in_channels, length, min_length=4)
    width = check_float("cnn1d", "width", width)
    return CNN1d(in_channels=in_channels, num_classes=num_classes,
                 widths=[scaled(c, width) for c in (32, 64, 64)])


def _rnn(cell: str, num_classes, in_channels, length, hidden, layers, pool) -> nn.Module:
    _series(cell, num_classes, in_channels, length)
    check_int(cell, "hidden", hidden)
    check_int(cell, "layers", layers)
    check_choice(cell, "pool", pool, ("last", "mean"))
    return RNNClassifier(cell=cell, in_channels=in_channels, num_classes=num_classes,
                         hidden=hidden, layers=layers, pool=pool)


def build_gru(*, num_classes: int = 10, in_channels: int = 1, length: int = 40, hidden: int = 64,
              layers: int = 1, pool: str = "last") -> nn.Module:
    """GRU classifier; ``pool`` "last" (final hidden state) or "mean" (over all steps).
    ``length`` is only checked: a recurrent net takes any number of steps."""
    return _rnn("gru", num_classes, in_channels, length, hidden, layers, pool)


def build_lstm(*, num_classes: int = 10, in_channels: int = 1, length: int = 40,
               hidden: int = 64, layers: int = 1, pool: str = "last") -> nn.Module:
    """LSTM classifier; ``pool`` "last" (final hidden state) or "mean" (over all steps)."""
    return _rnn("lstm", num_classes, in_channels, length, hidden, layers, pool)


def build_deepsense(*, num_classes: int = 10, in_channels: int = 1, length: int = 40,
                    intervals: int = 8, conv_channels: int = 32, conv_layers: int = 3,
                    hidden: int = 64, layers: int = 2) -> nn.Module:
    """DeepSense-style CNN+GRU; ``length`` must be a multiple of ``intervals``."""
    name = "deepsense"
    _series(name, num_classes, in_channels, length)
    check_int(name, "intervals", intervals)
    if length % intervals:
        fail(name, "intervals", f"a divisor of length={length}", intervals)
    for key, value in (("conv_channels", conv_channels), ("conv_layers", conv_layers),
                       ("hidden", hidden), ("layers", layers)):
        check_int(name, key, value)
    return DeepSense(in_channels=in_channels, num_classes=num_classes, intervals=intervals,
                     conv_channels=conv_channels, conv_layers=conv_layers, hidden=hidden,
                     layers=layers)
