import pytest
import torch
from torch import nn

from dnnzip.capacity import (capacity_table, get_capacity, num_capacities, select_capacity,
                             set_capacity)
from dnnzip.capacity.layers import NestBatchNorm2d, NestConv2d, NestLinear
from dnnzip.capacity.nest import NestConfig, apply_nest, filter_fraction, nest
from dnnzip.data.synthetic import synthetic
from dnnzip.errors import BudgetError, ConfigError, UnsupportedLayerError
from dnnzip.nn.spec import describe, rebuild_into
from dnnzip.registry import Context, get

torch.manual_seed(0)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.ReLU(),
                         nn.Linear(32, 10)).eval()


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.a(x)
        return self.fc((h + self.b(h)).mean((2, 3)))


X = torch.randn(6, 1, 12, 12)


def test_full_capacity_is_the_original_and_filters_are_sorted():
    model = cnn()
    nested = nest(model, (0.25, 0.5, 1.0), X)
    assert nested._dnnzip_nest["reordered"]
    assert torch.allclose(nested(X), model(X), atol=1e-5)
    assert isinstance(nested[0], NestConv2d) and isinstance(nested[1], NestBatchNorm2d)
    assert isinstance(nested[9], NestLinear) and nested[9].widths == [10, 10, 10]
    assert nested[0].widths == [2, 4, 8] and nested[7].widths == [8, 16, 32]
    norms = nested[4].weight.flatten(1).abs().sum(1)
    assert torch.all(norms[:-1] >= norms[1:])  # most important filters first


def test_capacities_slice_prefixes_and_cost_less():
    nested = nest(cnn(), (0.25, 0.5, 1.0), X)
    assert num_capacities(nested) == 3 and get_capacity(nested) == 2
    # capacity 0 equals a physically small model made of the weight prefixes
    set_capacity(nested, 0)
    small = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 36, 8), nn.ReLU(), nn.Linear(8, 10)).eval()
    with torch.no_grad():
        small[0].weight.copy_(nested[0].weight[:2]); small[0].bias.copy_(nested[0].bias[:2])
        for t in ("weight", "bias"):
            getattr(small[1], t).copy_(getattr(nested[1], t)[:2])
        small[1].running_mean.copy_(nested[1].running_mean[0, :2])
        small[1].running_var.copy_(nested[1].running_var[0, :2])
        small[4].weight.copy_(nested[4].weight[:4, :2]); small[4].bias.copy_(nested[4].bias[:4])
        small[7].weight.copy_(nested[7].weight[:8, :144]); small[7].bias.copy_(nested[7].bias[:8])
        small[9].weight.copy_(nested[9].weight[:, :8]); small[9].bias.copy_(nested[9].bias)
    assert torch.allclose(nested(X), small(X), atol=1e-5)
    assert filter_fraction(nested) == pytest.approx((2 + 4 + 8) / (8 + 16 + 32))
    table = capacity_table(nested, example=X, repeats=5)
    assert get_capacity(nested) == 0  # restored
    macs = [r["macs"] for r in table]
    energy = [r["energy_mj"] for r in table]
    assert macs[0] < macs[1] < macs[2] and energy[0] < energy[1] < energy[2]


def test_residual_model_skips_reorder_but_nests():
    model = Residual().eval()
    x = torch.randn(2, 4, 6, 6)
    nested = nest(model, (0.5, 1.0), x)
    # a reorder is kept only if it preserves the function (a residual add usually breaks it)
    assert torch.allclose(nested(x), model(x), atol=1e-5)
    set_capacity(nested, 0)
    assert nested(x).shape == (2, 3)


def test_one_file_reload_keeps_capacity():
    nested = nest(cnn(), (0.5, 1.0), X)
    set_capacity(nested, 0)
    again = rebuild_into(cnn(), describe(nested))
    again.load_state_dict(nested.state_dict(), strict=True)
    again.eval()
    assert get_capacity(again) == 0 and torch.equal(again(X), nested(X))
    set_capacity(again, 1)
    set_capacity(nested, 1)
    assert torch.equal(again(X), nested(X))


def test_joint_training_improves_small_capacity():
    data = synthetic((1, 12, 12), 10, n=256, seed=1)
    from dnnzip.train import evaluate
    model = cnn()
    ctx0 = Context(data=data, example_input=data.example_input(4), epochs=0)
    untrained = apply_nest(model, NestConfig(capacities=(0.5, 1.0)), ctx0)
    ctx = Context(data=data, example_input=data.example_input(4), epochs=4, batch_size=32, lr=1e-2)
    trained = apply_nest(model, NestConfig(capacities=(0.5, 1.0), distill=False), ctx)
    accs = []
    for m in (untrained, trained):
        set_capacity(m, 0)
        accs.append(evaluate(m, data))
    assert accs[1] > accs[0] + 0.2


def test_select_capacity_from_budget():
    nested = nest(cnn(), (0.25, 0.5, 1.0), X)
    table = [{"capacity": 0, "latency_ms": 0.1, "energy_mj": 0.01, "macs": 10},
             {"capacity": 1, "latency_ms": 0.2, "energy_mj": 0.02, "macs": 20},
             {"capacity": 2, "latency_ms": 0.4, "energy_mj": 0.04, "macs": 40}]
    assert select_capacity(nested, max_latency_ms=0.25, table=table) == 1
    assert get_capacity(nested) == 1
    assert select_capacity(nested, max_latency_ms=1.0, max_energy_mj=0.015, table=table) == 0
    from dnnzip.budget import Budget
    assert select_capacity(nested, Budget(max_latency_ms=5.0), table=table) == 2
    with pytest.raises(BudgetError, match="no capacity"):
        select_capacity(nested, max_macs=5, table=table)
    with pytest.raises(ConfigError, match="needs a limit"):
        select_capacity(nested, table=table)
    assert select_capacity(nested, max_macs=10 ** 12, example=X) == 2  # measured table


def test_bad_inputs_are_named_errors():
    nested = nest(cnn(), (0.5, 1.0), X)
    with pytest.raises(ConfigError, match="capacity 2 does not exist"):
        set_capacity(nested, 2)
    with pytest.raises(ConfigError, match="not a multi-capacity model"):
        set_capacity(cnn(), 0)
    with pytest.raises(ConfigError, match="capacities"):
        NestConfig(capacities=(0.5, 0.25, 1.0))
    with pytest.raises(ConfigError, match="capacities"):
        NestConfig(capacities=(0.5,))

    class RNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.GRU(3, 4), nn.Linear(4, 2)

    with pytest.raises(UnsupportedLayerError, match="'rnn' \\(GRU\\)"):
        nest(RNN(), (0.5, 1.0), torch.randn(2, 3))
    assert get("capacity.nest").config_cls is NestConfig


def test_zoo_lenet5_three_capacities_in_one_artifact(tmp_path):
    from dnnzip import zoo
    from dnnzip.artifact import pack, unpack

    model = zoo.build("lenet5").eval()
    x = torch.randn(2, 1, 28, 28)
    nested = nest(model, (0.25, 0.5, 1.0), x)
    pack(nested, tmp_path / "n.dnz")
    again = unpack(tmp_path / "n.dnz")
    assert num_capacities(again) == 3
    for i in range(3):
        set_capacity(again, i)
        set_capacity(nested, i)
        assert torch.equal(again(x), nested(x))
