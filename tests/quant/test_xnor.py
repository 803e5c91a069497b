"""The XNOR-popcount path: the C kernel and the numpy path give the float simulation's integer
dot products bit for bit, and the whole binary model agrees with its float simulation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from dnnzip import kernels, registry
from dnnzip.errors import ConfigError
from dnnzip.quant import xnor
from dnnzip.quant.binary import BinaryConv2d, BinaryLinear
from dnnzip.quant.xnor import packed_inference

needs_c = pytest.mark.skipif(kernels.load("xnor") is None, reason="no C compiler")


def _unit(m, shift=0.1):
    """Scale 1, gain 1, no bias: the float simulation then outputs the integer +-1 dot."""
    with torch.no_grad():
        m.weight_codes.copy_(torch.randint(0, 2, m.weight_codes.shape, dtype=torch.uint8))
        m.weight_scale.fill_(1.0)
        m.in_gain.fill_(1.0)
        m.in_shift.fill_(shift)
        if m.bias is not None:
            m.bias.zero_()
    return m


@needs_c
@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 9), o=st.integers(1, 70), kh=st.integers(1, 4), kw=st.integers(1, 4),
       stride=st.integers(1, 3), pad=st.integers(0, 2), dil=st.integers(1, 2),
       seed=st.integers(0, 2 ** 16))
def test_c_conv_is_bit_exact(c, o, kh, kw, stride, pad, dil, seed):
    torch.manual_seed(seed)
    h, w = 9, 8
    if h + 2 * pad < dil * (kh - 1) + 1 or w + 2 * pad < dil * (kw - 1) + 1:
        return
    m = _unit(BinaryConv2d(c, o, kernel_size=[kh, kw], stride=[stride, 1], padding=[pad, pad],
                           dilation=[dil, 1], bias=False))
    x = torch.randn(2, c, h, w)
    lib = kernels.load("xnor")
    dot_c = xnor.xnor_conv2d_c(m, x.numpy(), lib)
    assert dot_c.dtype == np.int32
    np.testing.assert_array_equal(dot_c, xnor.xnor_conv2d(m, x.numpy()))
    with torch.no_grad():
        ref = m(x)  # float simulation: exact small integers in float32
    np.testing.assert_array_equal(dot_c.astype(np.float32), ref.numpy())


@needs_c
@pytest.mark.parametrize("c", [63, 64, 65, 130])  # pixels spanning one, two and three words
def test_c_conv_with_wide_pixels_is_bit_exact(c):
    torch.manual_seed(c)
    m = _unit(BinaryConv2d(c, 7, kernel_size=[3, 2], stride=[1, 2], padding=[1, 1],
                           dilation=[1, 1], bias=False))
    x = torch.randn(2, c, 5, 6)
    dot_c = xnor.xnor_conv2d_c(m, x.numpy(), kernels.load("xnor"))
    np.testing.assert_array_equal(dot_c, xnor.xnor_conv2d(m, x.numpy()))
    with torch.no_grad():
        np.testing.assert_array_equal(dot_c.astype(np.float32), m(x).numpy())


@needs_c
@pytest.mark.parametrize("k", [1, 63, 64, 65, 400])
def test_c_linear_is_bit_exact(k):
    torch.manual_seed(k)
    m = _unit(BinaryLinear(k, 33), shift=-0.05)
    x = torch.randn(6, k)
    x[0, 0] = -0.05  # x - shift == 0 is +1, as Sign(0) = +1 in the simulation
    dot_c = xnor.xnor_linear_c(m, x.numpy(), kernels.load("xnor"))
    np.testing.assert_array_equal(dot_c, xnor.xnor_linear(m, x.numpy()))
    with torch.no_grad():
        np.testing.assert_array_equal(dot_c.astype(np.float32), m(x).numpy())


@needs_c
def test_packed_weights_follow_changed_codes():
    m = _unit(BinaryLinear(70, 5))
    x = torch.randn(3, 70)
    with packed_inference(torch.nn.Sequential(m), backend="c"):
        with torch.no_grad():
            a = m(x)
            m.weight_codes.copy_(1 - m.weight_codes)  # every sign flips
            b = m(x)
    torch.testing.assert_close(a, -b)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_binary_model_agrees_with_float_simulation(tiny, backend):
    if backend == "c" and kernels.load("xnor") is None:
        pytest.skip("no C compiler")
    model, ctx = tiny
    q = registry.apply("quant.binary", model, None, ctx)
    x = torch.cat([b[0] for b in ctx.data.loader("test", batch_size=64)])
    with torch.no_grad():
        y_float = q(x)
        with packed_inference(q, backend=backend):
            y_packed = q(x)
    torch.testing.assert_close(y_packed, y_float, rtol=1e-5, atol=1e-5)
    assert torch.equal(y_float.argmax(1), y_packed.argmax(1))
    assert not any(getattr(m, "_xnor", False) for m in q.modules())  # switched back off


def test_backend_choice(monkeypatch):
    model = torch.nn.Sequential(_unit(BinaryLinear(8, 2)))
    with pytest.raises(ConfigError, match="backend"):
        with packed_inference(model, backend="gpu"):
            pass
    monkeypatch.setenv("DNNZIP_NO_C", "1")
    assert xnor.resolve_backend("auto") == "numpy"
    with pytest.raises(ConfigError, match="C kernel is unavailable"):
        xnor.resolve_backend("c")
    with packed_inference(model):  # auto falls back to numpy
        with torch.no_grad():
            model(torch.randn(2, 8))
