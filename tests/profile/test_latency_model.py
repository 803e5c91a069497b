import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.errors import ConfigError, FormatError, UnsupportedLayerError
from dnnzip.profile.latency_model import (LatencyModel, LayerConfig, layer_configs, mape,
                                          measure_model, profile_layer)

torch.manual_seed(0)


def net(c=8):
    return nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                         nn.Conv2d(c, 2 * c, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(2 * c, 10)).eval()


def test_layer_configs_count_work():
    cfgs = layer_configs(net(), torch.randn(2, 1, 12, 12), functional=False)
    kinds = [c.kind for c in cfgs]
    assert kinds == ["conv2d", "elementwise", "elementwise", "elementwise", "dwconv2d", "conv2d",
                     "elementwise", "elementwise", "linear"]
    conv, dw, pw, fc = cfgs[0], cfgs[4], cfgs[5], cfgs[8]
    assert conv.macs == 8 * 12 * 12 * 9 and conv.params == 8 * 9 + 8 and conv.padding == 1
    assert dw.macs == 8 * 6 * 6 * 9 and not dw.bias and dw.groups == 8
    assert pw.macs == 16 * 6 * 6 * 8 and pw.hout == 6
    assert fc.macs == 160 and fc.cin == 16
    for c in (conv, dw, pw, fc, cfgs[3]):  # each config rebuilds a runnable layer of that shape
        m, x = c.build()
        with torch.no_grad():
            assert m(x).numel() == c.out_elems
    full = layer_configs(net(), torch.randn(2, 1, 12, 12))  # + nn.Flatten's call and its view
    assert [(c.kind, c.op) for c in full[8:10]] == [("call", "Flatten"), ("functional", "view")]
    assert [c for c in full if c.kind not in ("call", "functional")] == cfgs


class Block(nn.Module):
    """Residual add, channel shuffle (a copy), concat, and a reshape onto the batch axis."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.conv1d = nn.Conv1d(4, 6, 3, padding=1)

    def forward(self, x):
        y = self.conv(x) + x
        n, c, h, w = y.shape
        y = y.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        y = torch.cat([y, x], 1)
        z = self.conv1d(x.reshape(n * h, c, w))  # like DeepSense: h intervals as the batch
        return y.mean((2, 3)), z


def test_functional_ops_calls_and_batch():
    cfgs = layer_configs(nn.Sequential(Block()), torch.randn(3, 4, 5, 6))
    ops = [(c.kind, c.op) for c in cfgs]
    assert ops == [("call", "Block"), ("conv2d", "Conv2d"), ("functional", "binary"),
                   ("functional", "view"), ("functional", "view"), ("functional", "copy"),
                   ("functional", "cat"), ("functional", "view"), ("conv1d", "Conv1d"),
                   ("functional", "reduce")]
    add, copy, cat, c1d = cfgs[2], cfgs[5], cfgs[6], cfgs[8]
    assert add.out_elems == 4 * 5 * 6 and copy.out_elems == 120 and cat.out_elems == 240
    assert cat.cin == 2 and c1d.batch == 5 and c1d.macs == 5 * 6 * 6 * 4 * 3
    for c in (add, copy, cat, c1d, cfgs[-1]):  # functional ops rebuild as runnable callables
        fn, x = c.build()
        assert profile_layer(c, repeats=2, warmup=1) > 0
        assert fn(x) is not None

    class Hidden(nn.Module):  # a heavy op called functionally would be priced as free
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return F.linear(x, self.w)

    with pytest.raises(UnsupportedLayerError, match="functional 'linear'"):
        layer_configs(Hidden(), torch.randn(1, 4))


def test_rnn_layers_and_unsupported():
    class R(nn.Module):
        def __init__(self, layers=1, **kw):
            super().__init__()
            self.rnn = nn.GRU(3, 8, num_layers=layers, batch_first=True, **kw)
            self.fc = nn.Linear(16 if kw else 8, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    cfg = layer_configs(R(), torch.randn(1, 5, 3))[0]
    assert cfg.kind == "rnn" and cfg.steps == 5 and cfg.macs == 5 * 3 * 8 * 11
    two = [c for c in layer_configs(R(2), torch.randn(1, 5, 3)) if c.kind == "rnn"]
    assert [(c.cin, c.cout, c.macs) for c in two] == [(3, 8, 5 * 3 * 8 * 11),
                                                       (8, 8, 5 * 3 * 8 * 16)]
    assert two[1].params == 3 * 8 * 16 + 2 * 24
    with pytest.raises(UnsupportedLayerError, match="'rnn' \\(GRU\\)"):
        layer_configs(R(bidirectional=True), torch.randn(1, 5, 3))


def _samples():
    out = []
    for c in (4, 16):
        for h in (8, 16):
            for cfg in layer_configs(net(c), torch.randn(1, 1, h, h)):
                if cfg.kind != "call":  # a call has no work to profile
                    out.append((cfg, profile_layer(cfg, repeats=3, warmup=1)))
    return out


def test_fit_predict_and_json_round_trip(tmp_path):
    samples = _samples()
    model = LatencyModel.fit(samples, max_depth=2, min_leaf=2)
    assert set(model.trees) == {"conv2d", "dwconv2d", "elementwise", "linear", "functional"}
    archs = [(net(c), torch.randn(1, 1, h, h)) for c, h in ((4, 8), (8, 8), (8, 16), (16, 16))]
    measured = [(layer_configs(m, x), measure_model(m, x, repeats=3, warmup=1)) for m, x in archs]
    model.calibrate(measured)
    preds = [model.predict(m, x) for m, x in archs]
    assert all(p > 0 for p in preds)
    assert mape(preds, [t for _, t in measured]) < 1.0  # sanity: same order of magnitude
    path = tmp_path / "lat.json"
    model.save(path)
    text = path.read_text()
    assert json.loads(text)["format"] == "dnnzip.latency_model/2"
    again = LatencyModel.load(path)
    assert [again.predict(m, x) for m, x in archs] == preds
    old = json.loads(text)  # a /1 file ([a, b, c]: one scale for every kind) still loads
    old["format"], old["calibration"] = "dnnzip.latency_model/1", [1.5, 0.01, 0.002]
    cal = LatencyModel.from_dict(old).calibration
    assert cal["scale"]["conv2d"] == cal["scale"]["linear"] == 1.5 and cal["call"] == 0.0
    with pytest.raises(FormatError, match="malformed"):
        LatencyModel.from_dict({**old, "format": "dnnzip.latency_model/2", "calibration": [1]})


def test_leaf_model_learns_linear_work():
    # synthetic "runtime": latency = 0.01 + 2 ms per MMAC: the leaf regression must recover it
    samples = []
    for cin in (4, 8, 16, 32):
        for h in (8, 16, 32):
            cfg = layer_configs(nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1)),
                                torch.randn(1, cin, h, h))[0]
            samples.append((cfg, 0.01 + 2.0 * cfg.macs / 1e6))
    model = LatencyModel.fit(samples, max_depth=1, min_leaf=3)
    probe = layer_configs(nn.Sequential(nn.Conv2d(12, 12, 3, padding=1)),
                          torch.randn(1, 12, 20, 20))[0]
    assert model.predict_layer(probe) == pytest.approx(0.01 + 2.0 * probe.macs / 1e6, rel=0.05)


def test_bad_inputs():
    model = LatencyModel.fit([(LayerConfig("linear", "Linear", 4, 4, macs=16), 0.01),
                              (LayerConfig("linear", "Linear", 8, 8, macs=64), 0.02)])
    with pytest.raises(UnsupportedLayerError, match="no 'conv2d' layers"):
        model.predict(nn.Sequential(nn.Conv2d(1, 2, 3)), torch.randn(1, 1, 5, 5))
    with pytest.raises(FormatError):
        LatencyModel.from_dict({"format": "pickle"})
    with pytest.raises(FormatError):
        LatencyModel.from_dict({"format": "dnnzip.latency_model/1", "trees": {}})
    with pytest.raises(Exception, match="mape"):
        mape([], [])


def test_calibration_recovers_per_kind_scales_and_call_cost():
    # synthetic runtime: convs 1.5x slower in a model than alone, linears 1x, 0.01 ms per call
    conv = LayerConfig("conv2d", "Conv2d", 4, 4, 9, macs=10_000)
    fc = LayerConfig("linear", "Linear", 4, 4, macs=1_000)
    call = LayerConfig("call", "Block", 0, 0)
    model = LatencyModel.fit([(conv, 0.1), (fc, 0.02)] * 3, max_depth=1, min_leaf=2)
    archs = [[conv] * i + [fc] * j + [call] * k for i, j, k in
             ((1, 1, 0), (3, 1, 2), (1, 4, 1), (2, 2, 5), (5, 1, 3))]
    measured = [(a, 1.5 * 0.1 * a.count(conv) + 0.02 * a.count(fc) + 0.01 * a.count(call))
                for a in archs]
    cal = model.calibrate(measured, scales="groups").calibration
    held_out = [conv] * 4 + [fc] * 3 + [call] * 4
    assert model.predict_configs(held_out) == pytest.approx(0.6 + 0.06 + 0.04, rel=1e-3)
    assert cal["call"] == pytest.approx(0.01, rel=1e-2)  # (per-op cost and scales trade off)
    assert cal["scale"]["conv2d"] > cal["scale"]["linear"]
    assert cal["scale"]["rnn"] == 1.0  # no RNN in the calibration models: left at 1
    assert cal["scale"]["dwconv2d"] == cal["scale"]["conv2d"]  # one scale per SCALE_GROUPS group
    per_kind = LatencyModel(model.trees).calibrate(measured)  # default: a scale per kind
    assert per_kind.predict_configs(held_out) == pytest.approx(0.7, rel=1e-3)
    with pytest.raises(ConfigError, match="scales"):
        model.calibrate(measured, scales="fuzzy")
