import numpy as np
import pytest
import torch

from dnnzip import registry, zoo
from dnnzip.artifact import pack, unpack
from dnnzip.data import load_data
from dnnzip.errors import ConfigError
from dnnzip.registry import Context
from dnnzip.share.kmeans import distinct_values, fit_budget, kmeans_1d
from dnnzip.train import TrainSettings, evaluate, fit


def test_kmeans_1d_linear_init_converges_to_cluster_means():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(-1, 0.01, 500), rng.normal(2, 0.01, 500)]).astype(np.float32)
    c, idx = kmeans_1d(v, 2)
    np.testing.assert_allclose(c, [-1, 2], atol=0.01)
    assert (idx[:500] == 0).all() and (idx[500:] == 1).all()


@pytest.fixture(scope="module")
def trained():
    data = load_data("digits", seed=0)
    torch.manual_seed(0)
    m = zoo.build("lenet300", input_size=8, hidden=[64, 32])
    fit(m, data, TrainSettings(epochs=10, batch_size=64, lr=3e-3, progress=False))
    return m.eval(), data


def test_sharing_limits_distinct_values_and_keeps_accuracy(trained, tmp_path):
    model, data = trained
    base = evaluate(model, data.test)
    ctx = Context(data=data, epochs=1, batch_size=64, max_batches=10)
    shared = registry.apply("share.kmeans", model, {"bits": 4, "conv_bits": 4}, ctx)
    for name, k in distinct_values(shared).items():
        assert k <= 16, name
    acc = evaluate(shared, data.test)
    assert acc >= base - 0.03
    # the file is smaller than dense fp32 because the packer codes the 4-bit indices
    dense, coded = tmp_path / "dense.dnz", tmp_path / "shared.dnz"
    pack(model, dense)
    pack(shared, coded)
    assert coded.stat().st_size < dense.stat().st_size / 4
    torch.testing.assert_close(unpack(coded).state_dict(), shared.state_dict(), rtol=0, atol=0)


def test_pruned_zeros_stay_zero(trained):
    model, data = trained
    pruned = registry.fresh_copy(model)
    with torch.no_grad():
        w = pruned.fc1.weight
        w[w.abs() < w.abs().median()] = 0
    zeros = pruned.fc1.weight == 0
    shared = registry.apply("share.kmeans", pruned, {"bits": 3, "finetune": True},
                            Context(data=data, epochs=1, max_batches=5))
    assert (shared.fc1.weight[zeros] == 0).all()


def test_budget_lowers_widths():
    widths = fit_budget({"a": 8, "b": 8}, {"a": 100_000, "b": 1_000}, max_bytes=40_000)
    assert widths["a"] < 8 and sum(n * widths[k] / 8 for k, n in
                                   {"a": 100_000, "b": 1_000}.items()) <= 40_000


def test_bad_bits_named():
    with pytest.raises(ConfigError, match="'bits'"):
        registry.get("share.kmeans").config({"bits": 9})


def test_masked_layers_become_plain_with_positive_zeros(trained):
    model, data = trained
    ctx = Context(data=data, epochs=0)
    pruned = registry.apply("prune.connection", model, {"sparsity": 0.8}, ctx)
    assert any(hasattr(m, "weight_mask") for m in pruned.modules())
    shared = registry.apply("share.kmeans", pruned, {"bits": 3}, ctx)
    assert not any(hasattr(m, "weight_mask") for m in shared.modules())
    w = shared.fc1.weight.detach()
    zeros = w == 0
    assert zeros.float().mean() >= 0.79
    assert not torch.signbit(w[zeros]).any()  # +0.0: the packer's sparse encoding applies
    kept = registry.apply("share.kmeans", pruned, {"bits": 3, "keep_masks": True}, ctx)
    assert hasattr(kept.fc1, "weight_mask")
    x = data.example_input(4)
    torch.testing.assert_close(kept(x), shared(x))


def test_distill_finetune_needs_teacher(trained):
    model, data = trained
    with pytest.raises(ConfigError, match="teacher"):
        registry.apply("share.kmeans", model, {"distill": True},
                       Context(data=data, epochs=1, max_batches=1))
    out = registry.apply("share.kmeans", model, {"bits": 3, "distill": True},
                         Context(data=data, teacher=model, epochs=1, max_batches=3))
    assert all(k <= 8 for k in distinct_values(out).values())
