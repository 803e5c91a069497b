import math

import pytest
import torch

from dnnzip.errors import ConfigError
from dnnzip.quant.affine import (asymmetric_qparams, check_bits, fake_quant, qrange,
                                 quantize_weight, sqnr_db, symmetric_scales)
from dnnzip.quant.calibrate import Calibration, Observer, qparams_from


@pytest.mark.parametrize("lo,hi", [(0.0, 0.0), (3.0, 3.0), (-2.0, -2.0), (1e-12, 2e-12)])
def test_degenerate_ranges_give_finite_positive_scales(lo, hi):
    scale, zp = asymmetric_qparams(lo, hi)
    assert math.isfinite(scale) and scale > 0
    assert 0 <= zp <= 255
    x = torch.full((10,), lo)
    y = fake_quant(x, scale, zp, 0, 255)
    assert torch.isfinite(y).all()


def test_constant_weights_and_zero_weights_are_safe():
    w = torch.zeros(4, 3)
    s = symmetric_scales(w)
    assert torch.isfinite(s).all() and (s > 0).all()
    assert torch.equal(quantize_weight(w, s), torch.zeros(4, 3, dtype=torch.int64))


def test_real_zero_is_exact_and_error_is_half_a_step():
    torch.manual_seed(0)
    x = torch.randn(1000) * 3 + 1
    scale, zp = asymmetric_qparams(x.min().item(), x.max().item())
    y = fake_quant(x, scale, zp, 0, 255)
    assert (y - x).abs().max() <= scale / 2 + 1e-6
    assert fake_quant(torch.zeros(1), scale, zp, 0, 255).item() == 0.0


def test_ste_passes_gradient_inside_range_only():
    x = torch.tensor([-5.0, 0.3, 0.7, 5.0], requires_grad=True)
    fake_quant(x, 0.01, 100, 0, 255).sum().backward()  # range [-1, 1.55]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("bits", [0, 9, 1.5, True, "8"])
def test_bits_outside_range_is_config_error(bits):
    with pytest.raises(ConfigError, match="bits"):
        check_bits(bits, "Something")


def test_qrange():
    assert qrange(8, signed=True, narrow=True) == (-127, 127)
    assert qrange(4, signed=False) == (0, 15)


def test_observer_constant_data_and_unseen():
    obs = Observer()
    obs.update(torch.full((100,), 2.5))
    for method in Calibration:
        scale, zp = qparams_from(obs, method)
        assert math.isfinite(scale) and scale > 0
    scale, zp = qparams_from(Observer(), Calibration.MSE)
    assert scale == 1.0


def test_percentile_and_mse_clip_outliers():
    torch.manual_seed(0)
    x = torch.randn(20000)
    x[0] = 80.0
    obs = Observer()
    obs.update(x)
    lo, hi = obs.range(Calibration.MINMAX)
    assert hi == pytest.approx(80.0)
    _, phi = obs.range(Calibration.PERCENTILE, percentile=99.9)
    _, mhi = obs.range(Calibration.MSE)
    assert phi < 10 and mhi < hi


def test_sqnr():
    a = torch.ones(10)
    assert sqnr_db(a, a) == float("inf")
    assert sqnr_db(a, a * 1.1) == pytest.approx(20.0, abs=0.01)
