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
