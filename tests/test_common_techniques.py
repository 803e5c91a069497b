"""Checks every registered technique must pass (scikit-learn's parametrize_with_checks, for dnnzip).

For each technique and each of two very different models (a CNN and a GRU): the default config
round-trips through JSON and YAML, an unknown option is a ConfigError naming it, ``apply`` leaves
the input's state_dict unchanged, the output keeps the output shape, and the output survives
``pack`` → ``unpack`` with identical outputs. A technique that cannot handle a model must say so
with UnsupportedLayerError.
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from dnnzip import registry, zoo
from dnnzip.artifact import pack, unpack
from dnnzip.config import from_dict, to_dict
from dnnzip.data import synthetic
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.registry import Context

MODELS = {
    "lenet5": dict(shape=(1, 28, 28)),
    "gru": dict(shape=(1, 40)),
    "minilm": dict(tokens=16),  # a tiny random BERT-style classifier on token ids
}
TECHNIQUES = registry.names()


def token_data(length: int, vocab: int, n: int = 192):
    """Random token ids (id 0 is padding) with labels from a fixed rule, as a DataBundle."""
    from torch.utils.data import TensorDataset
    from dnnzip.data.bundle import DataBundle
    g = torch.Generator().manual_seed(0)

    def split(count):
        ids = torch.randint(1, vocab, (count, length), generator=g)
        return TensorDataset(ids, ids[:, 0] % 10)
    return DataBundle(name="tokens", train=split(n), val=split(48), test=split(48),
                      calib=split(32), input_shape=(length,), num_classes=10)


@pytest.fixture(scope="module")
def contexts():
    out = {}
    for name, spec in MODELS.items():
        torch.manual_seed(0)
        if "tokens" in spec:
            from dnnzip.zoo.minilm import TINY
            model = zoo.build(name, **{**TINY, "pretrained": False, "num_classes": 10}).eval()
            data = token_data(spec["tokens"], vocab=TINY.get("vocab_size", 100))
        else:
            model = zoo.build(name).eval()
            data = synthetic(spec["shape"], 10, n=192, seed=0)
        ctx = Context(data=data, teacher=model, example_input=data.example_input(4), epochs=1,
                      batch_size=32, max_batches=2, seed=0, progress=False)
        out[name] = (model, ctx)
    return out


@pytest.mark.parametrize("name", TECHNIQUES)
def test_config_round_trips(name):
    tech = registry.get(name)
    config = tech.config_cls()
    d = to_dict(config)
    assert from_dict(tech.config_cls, json.loads(json.dumps(d))) == config
    assert from_dict(tech.config_cls, yaml.safe_load(yaml.safe_dump(d))) == config


@pytest.mark.parametrize("name", TECHNIQUES)
def test_unknown_option_is_named(name):
    with pytest.raises(ConfigError, match="no_such_option"):
        registry.get(name).config({"no_such_option": 1})


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", TECHNIQUES)
def test_apply_contract(name, model_name, contexts, tmp_path):
    model, ctx = contexts[model_name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = ctx.example_input
    with torch.no_grad():
        y_ref = model(x)
    try:
        result = registry.apply(name, model, None, ctx)
    except UnsupportedLayerError as exc:
        assert str(exc), "UnsupportedLayerError must say which layer and the fix"
        pytest.skip(f"{name} does not apply to {model_name}: {exc}")
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), f"{name} mutated its input ({k})"
    result.eval()
    with torch.no_grad():
        y = result(x)
    assert y.shape == y_ref.shape
    assert torch.isfinite(y).all()
    path = tmp_path / "m.dnz"
    pack(result, path)
    reloaded = unpack(path)
    with torch.no_grad():
        y2 = reloaded(x)
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-5)
