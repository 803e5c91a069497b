import csv

import pytest
import torch
from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.prune.search import knee_point, pareto_front, search_ratios
from dnnzip.prune.sensitivity import sensitivity
from dnnzip.prune.vd import VDPruneConfig, _VD
from dnnzip.registry import apply


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 5)).eval()


def test_sensitivity_curves_data_plot_and_ratios(h, tmp_path):
    m = small_cnn()
    ctx = h.make_ctx((1, 4, 4), n=96)
    res = sensitivity(m, ctx, kind="channel", ratios=(0.0, 0.5, 0.875))
    assert set(res.curves) == {"0", "2"}
    assert all(len(v) == 3 for v in res.curves.values())
    assert all(v[0] == pytest.approx(res.baseline) for v in res.curves.values())  # ratio 0 = no-op
    res.curves["2"] = [res.baseline, res.baseline - 0.5, res.baseline - 0.9]
    assert res.ratios_for(0.1)["2"] == 0.0
    png = res.plot(tmp_path / "s.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader(open(res.to_csv(tmp_path / "s.csv"))))
    assert rows[0] == ["layer", "0", "0.5", "0.875"] and len(rows) == 3
    conn = sensitivity(m, ctx, kind="connection", ratios=(0.5,))
    assert set(conn.curves) == {"0", "2", "5"}
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        sensitivity(m, ctx, ratios=(1.0,))


def test_pareto_front_and_knee():
    pts = [{"accuracy": a, "macs": m} for a, m in
           [(0.5, 10), (0.85, 30), (0.9, 100), (0.8, 50), (0.6, 15)]]
    front = pareto_front(pts)
    assert [(p["accuracy"], p["macs"]) for p in front] == [(0.5, 10), (0.6, 15), (0.85, 30),
                                                            (0.9, 100)]
    assert knee_point(front)["macs"] == 30  # big accuracy gain up to 30 MACs, little after


def test_nsga2_search_returns_front_and_usable_knee(h):
    m = small_cnn()
    ctx = h.make_ctx((1, 4, 4), n=96)
    res = search_ratios(m, ctx, n_trials=6, population=3, seed=0)
    assert len(res.trials) == 6 and res.front and res.knee in res.front
    out = apply("prune.channel", m, {"ratio": 0.0, "layer_ratios": res.layer_ratios(),
                                     "finetune": False}, ctx)
    assert out(ctx.example_input).shape == (4, 5)
    with pytest.raises(ConfigError, match="keep_range"):
        search_ratios(m, ctx, keep_range=(0.0, 1.0))


def test_vd_kl_matches_molchanov_fit_and_prunes_high_alpha(h):
    layer = nn.Linear(4, 3)
    vd = _VD(layer, threshold=3.0)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        vd.log_sigma2.fill_(0.0)  # log alpha = 0
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    expect = -(k1 * torch.sigmoid(torch.tensor(k2)) - 0.5 * torch.log1p(torch.tensor(1.0)) - k1)
    assert vd.kl().item() == pytest.approx(12 * expect.item(), rel=1e-5)
    with torch.no_grad():
        vd.log_sigma2[0] = 5.0  # log alpha = 5 > 3: dropped at eval
    vd.eval()
    x = torch.randn(2, 4)
    y = vd(x)
    assert torch.allclose(y[:, 0], layer.bias[0].expand(2))
    ctx = h.make_ctx((1, 4, 4), n=96, epochs=1)
    out = apply("prune.vd", small_cnn(), {"threshold": -1.0}, ctx)
    assert ctx.extra["prune.vd"]["total"] > 0.1
    assert torch.equal(out[0].weight == 0, out[0].weight_mask == 0)
    assert torch.equal(h.reload(out, small_cnn())(ctx.example_input), out(ctx.example_input))
    with pytest.raises(ConfigError, match="threshold"):
        VDPruneConfig(threshold=50.0)
