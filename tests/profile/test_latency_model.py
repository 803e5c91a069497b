import json

import pytest
import torch
from torch import nn

from dnnzip.errors import FormatError, UnsupportedLayerError
from dnnzip.profile.latency_model import (LatencyModel, LayerConfig, layer_configs, mape,
                                          measure_model, profile_layer)

torch.manual_seed(0)


def net(c=8):
    return nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                         nn.Conv2d(c, 2 * c, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(2 * c, 10)).eval()


def test_layer_configs_count_work():
    cfgs = layer_configs(net(), torch.randn(2, 1, 12, 12))
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
            assert m(x)[0].numel() == c.out_elems


def test_rnn_layers_and_unsupported():
    class R(nn.Module):
        def __init__(self, layers=1):
            super().__init__()
            self.rnn, self.fc = nn.GRU(3, 8, num_layers=layers, batch_first=True), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    cfg = layer_configs(R(), torch.randn(1, 5, 3))[0]
    assert cfg.kind == "rnn" and cfg.steps == 5 and cfg.macs == 5 * 3 * 8 * 11
    with pytest.raises(UnsupportedLayerError, match="'rnn' \\(GRU\\)"):
        layer_configs(R(2), torch.randn(1, 5, 3))


def _samples():
    out = []
    for c in (4, 8, 16):
        for h in (8, 16):
            for cfg in layer_configs(net(c), torch.randn(1, 1, h, h)):
                out.append((cfg, profile_layer(cfg, repeats=5, warmup=1)))
    return out


def test_fit_predict_and_json_round_trip(tmp_path):
    samples = _samples()
    model = LatencyModel.fit(samples, max_depth=2, min_leaf=2)
    assert set(model.trees) == {"conv2d", "dwconv2d", "elementwise", "linear"}
    archs = [(net(c), torch.randn(1, 1, h, h)) for c, h in ((4, 8), (8, 16), (16, 16))]
    measured = [(layer_configs(m, x), measure_model(m, x, repeats=5, warmup=1)) for m, x in archs]
    model.calibrate(measured)
    preds = [model.predict(m, x) for m, x in archs]
    assert all(p > 0 for p in preds)
    assert mape(preds, [t for _, t in measured]) < 1.0  # sanity: same order of magnitude
    path = tmp_path / "lat.json"
    model.save(path)
    text = path.read_text()
    assert json.loads(text)["format"] == "dnnzip.latency_model/1"
    again = LatencyModel.load(path)
    assert [again.predict(m, x) for m, x in archs] == preds


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
