"""The c runtime: generated C99 compiled with the system compiler matches torch."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.export import export_model
from dnnzip.profile import time_latency
from dnnzip.runtime import get_runtime

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), Block(),
                        nn.MaxPool2d(2), nn.AvgPool2d(2, padding=1), nn.Flatten(),
                        nn.Dropout(0.5), nn.Linear(4 * 2 * 2, 5), nn.Sigmoid())
    with torch.no_grad():
        bn = net[2].bn
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        net[0].weight[0] = 0  # a pruned filter: skipped zeros must not change the result
    return net.eval()


def test_c_matches_torch_and_times():
    net = small_net()
    x = torch.randn(3, 1, 11, 11)
    s = get_runtime("c").prepare(net, x[:1])
    np.testing.assert_allclose(s.run(x), net(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    stats = time_latency(s, x, warmup=1, repeats=5)
    assert stats.runtime == "c" and stats.threads == 1 and stats.p95_ms >= stats.p50_ms > 0


def test_c_1d_conv_bn_pool_gap():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), nn.BatchNorm1d(6), nn.ReLU6(),
                        nn.MaxPool1d(2), nn.Conv1d(6, 6, 3, dilation=2), nn.Tanh(),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    x = torch.randn(2, 2, 30)
    got = get_runtime("c").prepare(net, x).run(x)
    np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_c_unsupported_layer_is_named_and_threads_checked(tmp_path):
    class Rnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)

        def forward(self, x):
            return self.rnn(x)[0]

    with pytest.raises(UnsupportedLayerError, match=r"'rnn' \(GRU\).*--runtime onnxruntime"):
        get_runtime("c").prepare(Rnn(), torch.randn(1, 5, 3))
    with pytest.raises(ConfigError, match="single-threaded"):
        get_runtime("c").prepare(small_net(), torch.randn(1, 1, 11, 11), threads=2)
    path = export_model(small_net(), tmp_path / "net.c", format="c", example=torch.randn(1, 1, 11, 11))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dnnzip_kernels.h", "net.c", "net.h"]
    assert "int dnnzip_forward(const float *input, float *output, int batch)" in path.read_text()
