"""Activation memory, energy estimate and the DeepEye conv/FC split."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.profile import EnergyTable, count_macs, estimate_energy, profile, split
from dnnzip.profile.counts import has_rule, is_atomic
from dnnzip.profile.memory import activation_memory, weight_bytes, weight_bytes_at_bits
from dnnzip.profile.trace import trace


def lenet5_local() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                         nn.Linear(500, 10))


def _mem(model, x):
    return activation_memory(trace(model, x, is_atomic=is_atomic, is_rule=has_rule))


def test_peak_activation_memory_lenet5():
    m = _mem(lenet5_local(), torch.randn(1, 1, 28, 28))
    # during pool1: conv1 output (20x24x24) and pool1 output (20x12x12), fp32; input already freed
    assert m.peak_bytes == (20 * 24 * 24 + 20 * 12 * 12) * 4
    assert m.peak_at == "1" and m.how == "estimated" and m.batch == 1
    assert _mem(lenet5_local(), torch.randn(4, 1, 28, 28)).peak_bytes == 4 * m.peak_bytes


def test_residual_keeps_skip_alive():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(100, 100), nn.Linear(100, 100)

        def forward(self, x):
            return self.b(self.a(x)) + x

    m = _mem(Res(), torch.randn(1, 100))
    assert m.peak_bytes == 3 * 400  # x, a(x), b(a(x)) all live while b runs / at the add


def test_weight_bytes():
    model = lenet5_local()
    assert weight_bytes(model) == 431_080 * 4
    rows = count_macs(model, torch.randn(1, 1, 28, 28))
    assert weight_bytes_at_bits(rows) == 431_080 * 4


def test_energy_is_estimated_monotone_and_cheaper_in_int8():
    x = torch.randn(1, 64)
    small = estimate_energy(count_macs(nn.Linear(64, 8), x))
    big = estimate_energy(count_macs(nn.Linear(64, 64), x))
    assert small.how == big.how == "estimated" and small.table == "horowitz-45nm"
    assert 0 < small.compute_mj < big.compute_mj and small.total_mj < big.total_mj
    rows = count_macs(nn.Linear(64, 64), x)
    assert big.compute_mj == pytest.approx(64 * 64 * (3.7 + 0.9) * 1e-9)
    assert big.weights_mj == pytest.approx((64 * 64 + 64) * 640 * 1e-9, rel=0.02)  # bias ~ 0s
    rows[0].weight_bits = 8
    int8 = estimate_energy(rows, floating={rows[0].name: False})
    assert int8.compute_mj == pytest.approx(64 * 64 * (0.2 + 0.03) * 1e-9)
    assert int8.total_mj < big.total_mj


def test_energy_table_replaceable_from_json_and_yaml(tmp_path):
    rows = count_macs(nn.Linear(16, 16), torch.randn(1, 16))
    base = estimate_energy(rows)
    p = tmp_path / "cheap-dram.json"
    p.write_text(json.dumps({"dram_read_32bit": 64.0}))
    table = EnergyTable.load(p)
    assert table.name == "cheap-dram" and table.fp32_mult == 3.7
    cheap = estimate_energy(rows, table)
    assert cheap.table == "cheap-dram" and cheap.how == "estimated"
    assert cheap.weights_mj == pytest.approx(base.weights_mj / 10)
    prof = profile(nn.Linear(16, 16), example=torch.randn(1, 16), runtimes=(), energy_table=p)
    assert prof.energy.table == "cheap-dram" and prof.how["energy"] == "estimated (cheap-dram)"
    y = tmp_path / "t.yaml"
    y.write_text("name: my-mcu\nfp32_mult: 1.0\n")
    assert EnergyTable.load(y).name == "my-mcu"
    p.write_text(json.dumps({"dram_read": 1}))
    with pytest.raises(ConfigError, match="dram_read"):
        EnergyTable.load(p)
    with pytest.raises(ConfigError, match="fp32_add"):
        EnergyTable(fp32_add=-1.0)


def test_deepeye_split_lenet5():
    s = split(count_macs(lenet5_local(), torch.randn(1, 1, 28, 28)))
    assert s.params["fc"] == 405_510 and s.params["conv"] == 25_570
    assert s.share("bytes", "fc") > 0.9 and s.share("macs", "conv") > 0.8
    assert s.recommendation.startswith("FC layers hold 94% of storage")
    assert "conv layers hold 82% of MACs" in s.recommendation
