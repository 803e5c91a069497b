import pytest
import torch
from torch import nn

from dnnzip import registry
from dnnzip.errors import BudgetError
from dnnzip.quant.lowbit import KBitLinear
from dnnzip.quant.mixed import layer_bytes
from dnnzip.quant.rnn import QuantRNN
from dnnzip.registry import Context


def _bytes(q):
    return q.dnnzip_mixed["bytes"]


def test_mixed_respects_budget_and_tighter_budget_means_fewer_bits(tiny):
    model, ctx = tiny
    loose = registry.apply("quant.mixed", model, {"ratio": 0.25}, ctx)
    tight = registry.apply("quant.mixed", model, {"ratio": 0.12}, ctx)
    for q in (loose, tight):
        assert q.dnnzip_mixed["bytes"] <= q.dnnzip_mixed["budget_bytes"]
    assert sum(tight.dnnzip_mixed["bits"].values()) < sum(loose.dnnzip_mixed["bits"].values())
    got = {n: m.weight_bits for n, m in tight.named_modules() if hasattr(m, "weight_codes")}
    assert got == tight.dnnzip_mixed["bits"]


def test_mixed_gives_more_bits_to_the_sensitive_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4)).eval()
    with torch.no_grad():
        model[2].weight.mul_(0.01)   # layer 2 barely matters ...
        model[2].bias.zero_()
        model[0].weight.mul_(3.0)    # ... layer 0 matters a lot
    ctx = Context(example_input=torch.randn(64, 16))
    budget = sum(layer_bytes(m, 4) for m in (model[0], model[2], model[4]))
    q = registry.apply("quant.mixed", model, {"max_bytes": budget}, ctx)
    bits = q.dnnzip_mixed["bits"]
    assert bits["0"] > bits["2"]
    with pytest.raises(BudgetError):
        registry.apply("quant.mixed", model, {"max_bytes": 100}, ctx)


class Seq(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(3, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("tech,opts,bits", [("quant.int8", {}, 8),
                                            ("quant.linear", {"bits": 4, "qat": False,
                                                              "first_last_bits": 0}, 4)])
def test_rnn_weights_quantized(kind, tech, opts, bits):
    torch.manual_seed(0)
    model = Seq(kind).eval()
    x = torch.randn(8, 12, 3)
    q = registry.apply(tech, model, opts, Context(example_input=x))
    assert isinstance(q.rnn, QuantRNN) and q.rnn.weight_bits == bits
    codes = [b for n, b in q.rnn.named_buffers() if n.endswith(("_int8", "_codes"))]
    assert len(codes) == 2 and all(c.dtype in (torch.int8, torch.uint8) for c in codes)
    with torch.no_grad():
        ref, out = model(x), q(x)
    rel = (out - ref).pow(2).mean() / ref.pow(2).mean()
    assert rel < (1e-3 if bits == 8 else 5e-2)
    deq = q.rnn.dequantized()["weight_hh_l0"]
    step = q.rnn.weight_hh_l0_scale.max().item()
    assert (deq - model.rnn.weight_hh_l0).abs().max() <= step / 2 + 1e-6
