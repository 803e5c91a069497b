import numpy as np
import pytest
import torch
from torch import nn

from dnnzip import registry
from dnnzip.artifact import pack, unpack
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.quant.binary import BinaryConv2d, BinaryLinear, binary_weight_fq, BinaryMode, sign
from dnnzip.quant.lowbit import KBitConv2d, KBitLinear, linear_fq, log_fq
from dnnzip.quant.xnor import packed_inference


@pytest.mark.parametrize("mode", ["linear", "log"])
def test_kbit_codes_fit_their_width_and_error_shrinks_with_bits(tiny, mode):
    model, ctx = tiny
    x = ctx.example_input
    with torch.no_grad():
        ref = model(x)
    errs = []
    for bits in (2, 3, 4, 6, 8):
        q = registry.apply(f"quant.{mode}", model, {"bits": bits, "qat": False,
                                                    "first_last_bits": 0}, ctx)
        layers = [m for m in q.modules() if isinstance(m, (KBitLinear, KBitConv2d))]
        assert len(layers) == 4
        for m in layers:
            assert m.weight_bits == bits and m.weight_codes.dtype == torch.uint8
            assert int(m.weight_codes.max()) < 2 ** bits
            assert m.dnnzip_encodings() == {"weight_codes": ("bitpack", {"bits": bits})}
        with torch.no_grad():
            errs.append((q(x) - ref).pow(2).mean().item())
    assert errs[-1] < errs[2] < errs[0]


def test_log_weights_are_signed_powers_of_two():
    torch.manual_seed(0)
    w = torch.randn(6, 10)
    q = log_fq(w, 4)
    nz = q[q != 0]
    scale = torch.exp2(torch.ceil(torch.log2(w.abs().max(1).values)))
    ratio = (q.abs() / scale[:, None])[q != 0]
    assert torch.allclose(torch.log2(ratio), torch.round(torch.log2(ratio)))
    assert (torch.sign(nz) == torch.sign(w[q != 0])).all()
    assert torch.log2(ratio).min() >= -6  # 2^(k-1)-2 = 6 exponents below the scale


def test_linear_fq_levels():
    w = torch.randn(3, 50)
    for bits in (2, 3, 5):
        levels = torch.unique(linear_fq(w, bits)[0])
        assert len(levels) <= 2 ** bits - 1


def test_first_and_last_layer_keep_8_bits(tiny):
    model, ctx = tiny
    q = registry.apply("quant.linear", model, {"bits": 3, "qat": False}, ctx)
    assert q.features[0].weight_bits == 8 and q.fc2.weight_bits == 8
    assert q.features[4].weight_bits == 3 and q.fc1.weight_bits == 3


@pytest.mark.parametrize("opts,match", [({"bits": 1}, "quant.binary"), ({"bits": 9}, "bits"),
                                        ({"bits": 0}, "bits"), ({"act_bits": 12}, "act_bits")])
def test_lowbit_bad_bits(opts, match):
    with pytest.raises(ConfigError, match=match):
        registry.get("quant.linear").config(opts)


@pytest.mark.parametrize("tech", ["quant.linear", "quant.log", "quant.binary"])
def test_qat_and_pack_round_trip(tiny, tmp_path, tech):
    from tests.quant.conftest import TinyCNN
    model, ctx = tiny
    q = registry.apply(tech, model, None, ctx)
    n = pack(q, tmp_path / "m.dnz", ref={"template": "TinyCNN"})
    r = unpack(tmp_path / "m.dnz", template=TinyCNN()).eval()
    with torch.no_grad():
        assert torch.equal(q(ctx.example_input), r(ctx.example_input))
    assert n > 0


def test_sign_is_eq17_with_clipped_ste():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = sign(x)
    assert y.tolist() == [-1, -1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]


def test_stochastic_binarization_follows_eq18():
    fq = binary_weight_fq(BinaryMode.STOCHASTIC, seed=0)
    w = torch.cat([torch.full((1, 10000), 0.25), torch.full((1, 10000), -0.25)], 1)
    b = fq(w.requires_grad_(True))  # alpha = 0.25: p(+1) = 1 for +0.25, 0 for -0.25
    assert (b[0, :10000] > 0).all() and (b[0, 10000:] < 0).all()
    w0 = torch.cat([torch.zeros(1, 10000), torch.ones(1, 10)], 1).requires_grad_(True)
    b0 = fq(w0)  # w = 0: p = 0.5
    frac = (b0[0, :10000] > 0).float().mean().item()
    assert 0.45 < frac < 0.55
    b0.sum().backward()
    assert w0.grad is not None  # straight-through
    with torch.no_grad():       # inference: deterministic Eq. 17
        assert (fq(w0)[0, :10000] > 0).all()


def test_binary_model_structure_and_xnor_agreement(tiny):
    model, ctx = tiny
    q = registry.apply("quant.binary", model, None, ctx)
    assert isinstance(q.features[4], BinaryConv2d) and isinstance(q.fc1, BinaryLinear)
    assert isinstance(q.features[0], KBitConv2d) and q.features[0].weight_bits == 8
    for m in (q.features[4], q.fc1):
        assert m.weight_bits == 1 and set(m.weight_codes.unique().tolist()) <= {0, 1}
        assert m.dnnzip_encodings() == {"weight_codes": ("bitpack", {"bits": 1})}
        assert torch.allclose(m.weight_float().abs(), m.weight_scale.reshape(
            [-1] + [1] * (m.weight_codes.dim() - 1)).expand_as(m.weight_float()))
    x = torch.cat([b[0] for b in ctx.data.loader("test", batch_size=64)])
    with torch.no_grad():
        y_float = q(x)
        with packed_inference(q):
            y_xnor = q(x)
    assert torch.allclose(y_float, y_xnor, atol=1e-4)
    assert torch.equal(y_float.argmax(1), y_xnor.argmax(1))


def test_xnor_conv_with_padding_stride_matches_float():
    torch.manual_seed(0)
    m = BinaryConv2d(3, 4, kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], dilation=[1, 1])
    m.weight_codes.copy_(torch.randint(0, 2, m.weight_codes.shape, dtype=torch.uint8))
    m.weight_scale.uniform_(0.1, 1.0)
    m.bias.uniform_(-1, 1)
    m.in_shift.fill_(0.1)
    m.in_gain.fill_(0.7)
    x = torch.randn(5, 3, 11, 10)
    with torch.no_grad():
        ref = m(x)
        m._xnor = True
        out = m(x)
    assert torch.allclose(ref, out, atol=1e-5)


def test_binary_rejects_rnn_with_name():
    class R(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    from dnnzip.registry import Context
    with pytest.raises(UnsupportedLayerError, match="'rnn'"):
        registry.apply("quant.binary", R(), None, Context(example_input=torch.randn(2, 5, 3)))
