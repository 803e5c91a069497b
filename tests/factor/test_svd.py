import pytest
import torch
from torch import nn

from dnnzip.errors import BudgetError, ConfigError
from dnnzip.factor.lowrank_rnn import LowRankGRU, LowRankLSTM, from_rnn
from dnnzip.factor.svd import (SVDConfig, apply_svd, gains, rank_for_bytes, rank_for_energy,
                               rank_for_ratio, svd_factors)
from dnnzip.nn.spec import build_module, describe, rebuild_into
from dnnzip.registry import Context, get

torch.manual_seed(0)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


class GRUNet(nn.Module):
    def __init__(self, cls=nn.GRU):
        super().__init__()
        self.rnn = cls(6, 32, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def reload(model, base):
    """What the artifact does: rebuild from the spec into a fresh base, load the state dict."""
    new = rebuild_into(base, describe(model))
    new.load_state_dict(model.state_dict(), strict=True)
    return new.eval()


def test_svd_factors_are_optimal_and_full_rank_exact():
    W = torch.randn(20, 12)
    A, B = svd_factors(W, 12)
    assert torch.allclose(A @ B, W, atol=1e-5)
    A, B = svd_factors(W, 3)
    s = torch.linalg.svdvals(W)
    assert A.shape == (20, 3) and B.shape == (3, 12)
    # Eckart-Young: Frobenius error is the norm of the dropped singular values
    assert torch.isclose(torch.linalg.norm(W - A @ B), s[3:].norm(), rtol=1e-4)


def test_rank_larger_than_matrix_is_named_error():
    with pytest.raises(ConfigError, match=r"rank .* \[1, 12\]"):
        svd_factors(torch.randn(20, 12), 13)
    with pytest.raises(ConfigError, match="rank"):
        apply_svd(mlp(), SVDConfig(rule="fixed", rank=100), Context())


def test_rank_rules():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.7) == 2
    assert rank_for_energy(s, 1.0) == 3
    assert rank_for_ratio(100, 100, 0.5) == 25
    assert rank_for_bytes(100, 100, 4 * 200 * 7) == 7
    assert rank_for_bytes(100, 100, 10) == 0


def test_gains_match_survey_eq8_eq9():
    g = gains(300, 784, 20)
    assert g["S_g"] == pytest.approx(300 * 784 / (300 * 20 + 400 + 20 * 784))
    assert g["C_g"] == pytest.approx(300 ** 2 * 784 / (300 ** 2 * 20 + 20 ** 3 + 400 * 784))
    assert g["S_g_folded"] == pytest.approx(300 * 784 / (20 * 1084))


def test_linear_factored_into_standard_modules_and_reloads():
    model = mlp().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = apply_svd(model, SVDConfig(rule="fixed", rank=4), Context())
    for k, v in model.state_dict().items():  # input untouched
        assert torch.equal(v, before[k])
    fc = out[1]
    assert isinstance(fc, nn.Sequential) and [type(m) for m in fc] == [nn.Linear, nn.Linear]
    assert fc[0].weight.shape == (4, 64) and fc[0].bias is None and fc[1].weight.shape == (48, 4)
    assert out._dnnzip_factor["1"]["rank"] == 4
    x = torch.randn(5, 64)
    again = reload(out, mlp())
    assert torch.equal(again(x), out(x))


def test_energy_rule_error_decreases_with_energy():
    model = mlp().eval()
    x = torch.randn(32, 64)
    errs = []
    for e in (0.5, 0.8, 0.99):
        # last layer 48x10: factoring it saves nothing at high rank, min_gain leaves it dense
        out = apply_svd(model, SVDConfig(energy=e), Context())
        errs.append(float((out(x) - model(x)).abs().mean()))
    assert errs[0] > errs[1] > errs[2]


def test_byte_budget_is_met():
    model = mlp()
    budget = 4 * 900
    out = apply_svd(model, SVDConfig(rule="bytes", max_bytes=budget), Context())
    weights = sum(m.weight.numel() for m in out.modules() if isinstance(m, nn.Linear))
    assert 4 * weights <= budget
    with pytest.raises(BudgetError):
        apply_svd(model, SVDConfig(rule="bytes", max_bytes=100), Context())


@pytest.mark.parametrize("cls,lr_cls", [(nn.GRU, LowRankGRU), (nn.LSTM, LowRankLSTM)])
def test_rnn_gates_factored_and_reload(cls, lr_cls):
    model = GRUNet(cls).eval()
    out = apply_svd(model, SVDConfig(rule="ratio", ratio=0.3), Context())
    assert isinstance(out.rnn, lr_cls)
    dense = sum(p.numel() for n, p in model.rnn.named_parameters() if "weight" in n)
    low = sum(p.numel() for n, p in out.rnn.named_parameters() if "weight" in n)
    assert low <= 0.35 * dense
    x = torch.randn(3, 9, 6)
    again = reload(out, GRUNet(cls))
    assert torch.equal(again(x), out(x))
    # gradients flow into the factors
    out.train()
    out(x).sum().backward()
    assert out.rnn.weight_hh_l0_a.grad is not None


def test_lowrank_rnn_full_rank_matches_dense():
    rnn = nn.GRU(5, 8, num_layers=2, bidirectional=True, batch_first=True)
    ranks = {n: min(getattr(rnn, n).shape) for n in rnn._flat_weights_names if "weight" in n}
    low = from_rnn(rnn, ranks)
    x = torch.randn(2, 4, 5)
    assert torch.allclose(low(x)[0], rnn(x)[0], atol=1e-5)
    spec = describe(low)
    assert spec["cls"] == "factor.LowRankGRU" and spec["kwargs"]["ranks"] == ranks
    rebuilt = build_module(spec)
    rebuilt.load_state_dict(low.state_dict())
    assert torch.equal(rebuilt(x)[0], low(x)[0])
    assert torch.allclose(low.to_dense()(x)[0], rnn(x)[0], atol=1e-5)


def test_registered_and_config_checks():
    t = get("factor.svd")
    assert t.config_cls is SVDConfig
    with pytest.raises(ConfigError, match="energy"):
        SVDConfig(energy=1.5)
    with pytest.raises(ConfigError, match="max_bytes"):
        SVDConfig(rule="bytes")


def test_zoo_gru_factored_survives_artifact(tmp_path):
    from dnnzip import zoo
    from dnnzip.artifact import pack, unpack

    model = zoo.build("gru").eval()
    out = apply_svd(model, SVDConfig(rule="ratio", ratio=0.25), Context())
    assert isinstance(out.rnn, LowRankGRU)
    size = pack(out, tmp_path / "g.dnz")
    dense = pack(model, tmp_path / "d.dnz")
    assert size < dense
    again = unpack(tmp_path / "g.dnz")
    x = torch.randn(3, 1, 40)
    assert torch.equal(again(x), out(x))


def test_low_rank_gru_caches_recomposition_at_inference_only():
    import torch
    from torch import nn
    from dnnzip.factor.lowrank_rnn import from_rnn
    torch.manual_seed(0)
    low = from_rnn(nn.GRU(5, 8, batch_first=True), {"weight_ih_l0": 3}).eval()
    x = torch.randn(2, 4, 5)
    with torch.no_grad():
        a = low(x)[0]
        w1 = low.weights()["weight_ih_l0"]
        assert low.weights()["weight_ih_l0"] is w1            # cached
        low.weight_ih_l0_a.mul_(2.0)                           # an in-place change invalidates
        assert not torch.equal(low.weights()["weight_ih_l0"], w1)
        b = low(x)[0]
    assert not torch.equal(a, b)
    low.weight_ih_l0_a.data.div_(2.0)
    out = low(x)[0]                                            # with grad: no cache, grads flow
    out.sum().backward()
    assert low.weight_ih_l0_a.grad is not None and torch.allclose(out, a, atol=1e-6)
