"""MAC and parameter counts against hand-computed values."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnnzip import zoo
from dnnzip.profile import count_macs, count_params, total_macs


def lenet5_local() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                         nn.Linear(500, 10))


def by_name(rows):
    return {r.name: r for r in rows}


def test_lenet5_macs_exact():
    rows = count_macs(lenet5_local(), torch.randn(3, 1, 28, 28))
    assert [r.macs_dense for r in rows if r.macs_dense] == [288_000, 1_600_000, 400_000, 5_000]
    assert total_macs(rows) == 2_293_000


def test_zoo_lenet5_macs_and_params():
    model = zoo.build("lenet5")
    assert total_macs(count_macs(model, torch.randn(2, 1, 28, 28))) == 2_293_000
    total, nonzero = count_params(model)
    assert total == 431_080 and nonzero == sum(int(p.count_nonzero()) for p in model.parameters())


def test_grouped_and_1d_conv():
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    r = count_macs(conv, torch.randn(2, 8, 10, 10))[0]
    assert r.macs_dense == 16 * 10 * 10 * (8 // 4) * 9
    conv1 = nn.Conv1d(6, 12, 5, stride=2, groups=3)
    r1 = count_macs(conv1, torch.randn(1, 6, 41))[0]
    assert r1.macs_dense == 12 * 19 * (6 // 3) * 5  # out length (41 - 5) // 2 + 1 = 19
    assert r1.output_elements == 12 * 19


def test_linear_on_sequence_counts_every_row():
    r = count_macs(nn.Linear(7, 5), torch.randn(4, 9, 7))[0]
    assert r.macs_dense == 9 * 7 * 5


def test_gru_two_layers_bidirectional():
    gru = nn.GRU(6, 16, num_layers=2, bidirectional=True, batch_first=True)
    r = count_macs(gru, torch.randn(2, 10, 6))[0]
    per_step = 2 * (3 * 16 * (6 + 16) + 3 * 16 * (2 * 16 + 16))
    assert r.macs_dense == 10 * per_step
    assert r.type == "GRU"


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_lstm_time_major_and_projection():
    lstm = nn.LSTM(5, 8, batch_first=False)
    r = count_macs(lstm, torch.randn(12, 3, 5), batch=3)[0]
    assert r.macs_dense == 12 * 4 * 8 * (5 + 8)
    proj = nn.LSTM(5, 8, proj_size=3, batch_first=True)
    rp = count_macs(proj, torch.randn(1, 4, 5))[0]
    assert rp.macs_dense == 4 * (4 * 8 * 5 + 4 * 8 * 3 + 3 * 8)


def test_multihead_attention_and_functional_ops():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            a = torch.softmax(x @ x.transpose(1, 2), -1) @ x  # two functional matmuls
            o, _ = self.mha(a, a, a)
            return F.scaled_dot_product_attention(o, o, o)

    rows = by_name(count_macs(Net(), torch.randn(2, 5, 8)))
    assert rows["mha"].macs_dense == 3 * 5 * 64 + 5 * 64 + 2 * 5 * 5 * 8
    assert rows["matmul"].macs_dense == 5 * 5 * 8 + 5 * 8 * 5
    assert rows["matmul"].calls == 2
    assert rows["scaled_dot_product_attention"].macs_dense == 5 * 5 * (8 + 8)


def test_effective_macs_with_half_zeroed_weights():
    model = lenet5_local()
    with torch.no_grad():
        w = model[5].weight
        w.view(-1)[: w.numel() // 2] = 0
    rows = by_name(count_macs(model, torch.randn(1, 1, 28, 28)))
    assert rows["5"].macs_dense == 400_000
    assert rows["5"].macs_effective == 200_000
    assert rows["0"].macs_effective == rows["0"].macs_dense
    total, nonzero = count_params(model)
    assert total == 431_080
    assert nonzero == sum(int(p.count_nonzero()) for p in model.parameters()) <= total - 200_000


class MaskedLinear(nn.Linear):
    """A connection-pruned linear that keeps its mask as a buffer (dense weight untouched)."""

    def __init__(self, i, o):
        super().__init__(i, o)
        self.register_buffer("weight_mask", torch.ones(o, i))

    def forward(self, x):
        return F.linear(x, self.weight * self.weight_mask, self.bias)


class FakeQuantLinear(nn.Module):
    """Integer codes in a buffer, a float view via weight_float(), 4-bit weights."""

    weight_bits = 4

    def __init__(self, i, o):
        super().__init__()
        self.register_buffer("weight", torch.randint(-7, 8, (o, i), dtype=torch.int8))
        self.register_buffer("scale", torch.ones(()))

    def weight_float(self):
        return self.weight.float() * self.scale

    def forward(self, x):
        return F.linear(x, self.weight_float())


def test_weight_mask_buffer_and_quant_module():
    masked = MaskedLinear(10, 4)
    masked.weight_mask[:, :5] = 0
    r = count_macs(masked, torch.randn(2, 10))[0]
    assert (r.macs_dense, r.macs_effective) == (40, 20)
    assert count_params(masked) == (44, 24)  # 40 weights (20 kept) + 4 biases

    q = FakeQuantLinear(6, 3)
    rq = count_macs(nn.Sequential(q), torch.randn(1, 6))[0]
    assert rq.macs_dense == 18 and rq.weight_bits == 4 and rq.type == "FakeQuantLinear"
    assert count_params(q)[0] == 18  # integer codes in a buffer count as weights


def test_shared_parameter_counted_once_and_model_untouched():
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = count_macs(model, torch.randn(1, 4))
    assert count_params(model) == (20, 20)
    assert total_macs(rows) == 32 and by_name(rows)["0"].calls == 2  # same module twice
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_per_module_training_flags_restored():
    model = lenet5_local().train()
    model[2].eval()  # e.g. a frozen block inside a training model
    count_macs(model, torch.randn(1, 1, 28, 28))
    assert model.training and not model[2].training and model[5].training


def test_quantized_and_low_rank_rnns_count_their_recurrence():
    from dnnzip.factor.lowrank_rnn import from_rnn
    from dnnzip.quant.rnn import QuantRNN
    gru = nn.GRU(6, 16, batch_first=True)
    x = torch.randn(2, 10, 6)
    dense = total_macs(count_macs(gru, x))
    assert dense == 10 * 3 * 16 * (6 + 16)
    assert total_macs(count_macs(QuantRNN.from_float(gru), x)) == dense
    low = from_rnn(gru, {"weight_hh_l0": 4})
    # the recurrence on the recomposed weights, plus the one-off 48x4x16 recomposition per call
    assert total_macs(count_macs(low, x)) == dense + (3 * 16 * 4 * 16) // 2
