import numpy as np
import pytest
import torch
from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.share.eie import EIELinear, eie_forward_mlp
from dnnzip.share.kmeans import kmeans_1d


def _shared_sparse_linear(i=64, o=32, sparsity=0.9, k=16, seed=0):
    torch.manual_seed(seed)
    layer = nn.Linear(i, o)
    with torch.no_grad():
        w = layer.weight
        w[torch.rand_like(w) < sparsity] = 0
        nz = w != 0
        c, idx = kmeans_1d(w[nz].numpy(), k)
        w[nz] = torch.from_numpy(c[idx])
    return layer


def test_eie_matches_dense_with_sparse_activations():
    layer = _shared_sparse_linear()
    x = torch.relu(torch.randn(5, 64))
    eie = EIELinear.from_linear(layer)
    np.testing.assert_allclose(eie(x.numpy()), layer(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert eie.nnz == int((layer.weight != 0).sum())
    assert eie.memory_bytes() < 64 * 32 * 4 / 4


def test_eie_mlp_matches_dense():
    model = nn.Sequential(nn.Flatten(), _shared_sparse_linear(64, 32), nn.ReLU(),
                          _shared_sparse_linear(32, 10, seed=1))
    x = torch.randn(3, 1, 8, 8)
    np.testing.assert_allclose(eie_forward_mlp(model, x), model(x).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_eie_rejects_unshared_and_bad_shapes():
    with pytest.raises(ConfigError, match="share.kmeans"):
        EIELinear.from_linear(nn.Linear(64, 64), max_codebook=16)
    eie = EIELinear.from_linear(_shared_sparse_linear())
    with pytest.raises(ConfigError, match="expects input"):
        eie(np.zeros((2, 3), dtype=np.float32))


needs_c = pytest.mark.skipif(__import__("dnnzip.kernels").kernels.load("eie") is None,
                             reason="no C compiler")


@needs_c
@pytest.mark.parametrize("k", [16, 300])  # uint8 and uint16 codebook indices
@pytest.mark.parametrize("batch", [1, 3, 4, 7])  # per-sample walk below 4, batched from 4
def test_c_kernel_matches_numpy_and_dense(k, batch):
    layer = _shared_sparse_linear(96, 40, sparsity=0.8, k=k)
    x = torch.relu(torch.randn(batch, 96))
    x[0] = 0  # an all-zero sample: bias only
    x[:, 5] = 0  # a column no sample uses
    eie = EIELinear.from_linear(layer)
    assert eie.codes.dtype == (np.uint8 if len(eie.codebook) <= 256 else np.uint16)
    c, ref = eie(x.numpy(), backend="c"), eie(x.numpy(), backend="numpy")
    assert c.dtype == np.float32 and c.shape == (batch, 40)
    np.testing.assert_allclose(c, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, layer(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(c[0], layer.bias.detach().numpy())


@needs_c
def test_c_kernel_refuses_inconsistent_arrays():
    eie = EIELinear.from_linear(_shared_sparse_linear())
    eie.rows = eie.rows.copy()
    eie.rows[0] = eie.out_features  # would write past the output row
    with pytest.raises(ConfigError, match="inconsistent"):
        eie(np.ones((1, 64), dtype=np.float32), backend="c")


def test_backend_is_checked_and_numpy_fallback_works(monkeypatch):
    eie = EIELinear.from_linear(_shared_sparse_linear())
    x = np.abs(np.random.default_rng(0).standard_normal((2, 64))).astype(np.float32)
    with pytest.raises(ConfigError, match="backend"):
        eie(x, backend="gpu")
    monkeypatch.setenv("DNNZIP_NO_C", "1")
    with pytest.raises(ConfigError, match="C kernel is unavailable"):
        eie(x, backend="c")
    np.testing.assert_allclose(eie(x), eie(x, backend="numpy"))
