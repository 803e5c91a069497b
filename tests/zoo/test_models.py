"""Every zoo model: shapes on each geometry, spec round trip, resized layers, ONNX, training."""
import copy
import io
import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dnnzip import zoo
from dnnzip.nn.spec import build_module, describe, rebuild_into

NAMES = [n for n in zoo.names() if n != "minilm"]  # tests/zoo/test_minilm.py covers it
IMAGE = [n for n in NAMES if "input_size" in zoo.options(n)]
SERIES = [n for n in NAMES if "length" in zoo.options(n)]
# (kwargs, one sample's shape): fashion-mnist, digits, 3-channel non-square / mnist1d, 2-D, 3-axis.
IMAGE_GEOMETRIES = [({}, (1, 28, 28)), ({"input_size": 8}, (1, 8, 8)),
                    ({"input_size": [12, 16], "in_channels": 3, "num_classes": 4}, (3, 12, 16))]
SERIES_GEOMETRIES = [({}, (1, 40)), ({"length": 40}, (40,)),
                     ({"length": 24, "in_channels": 3, "num_classes": 4}, (3, 24))]
CASES = [(n, kw, s) for n in IMAGE for kw, s in IMAGE_GEOMETRIES] + \
        [(n, kw, s) for n in SERIES for kw, s in SERIES_GEOMETRIES]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def built(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return zoo.build(name, **kwargs).eval()


def example(name, n=2, seed=0):
    return torch.randn(n, *zoo.info(name)["input_shape"], generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=[f"{n}-{s}" for n, _, s in CASES])
def test_output_shape_on_each_geometry(name, kwargs, shape):
    out = built(name, **kwargs)(torch.randn(5, *shape))
    assert out.shape == (5, kwargs.get("num_classes", 10))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_describe_rebuild_round_trip(name):
    model = built(name, seed=0)
    spec = json.loads(json.dumps(describe(model)))
    base = rebuild_into(built(name, seed=1), spec)
    base.load_state_dict(model.state_dict(), strict=True)
    x = example(name)
    assert torch.equal(base.eval()(x), model(x))
    standalone = build_module(spec)  # every class in the tree is registered
    standalone.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(standalone.eval()(x), model(x))


def _roundtrip(model, name):
    base = rebuild_into(zoo.from_ref(model._dnnzip_ref), json.loads(json.dumps(describe(model))))
    base.load_state_dict(model.state_dict(), strict=True)
    return base.eval()


def test_narrowed_lenet5_runs_and_reloads():
    """A channel-pruned LeNet-5 (conv2 50 -> 30, fc1 500 -> 200): forward reads the sizes."""
    model = built("lenet5")
    model.conv2 = nn.Conv2d(20, 30, 5)
    model.fc1, model.fc2 = nn.Linear(30 * 16, 200), nn.Linear(200, 10)
    x = example("lenet5")
    assert model(x).shape == (2, 10)
    assert torch.equal(_roundtrip(model, "lenet5")(x), model(x))


def test_resnet_identity_block_can_be_dropped():
    model = built("resnet")
    assert [b.removable for b in model.layer2] == [False, True]
    del model.layer2[1]
    x = example("resnet")
    assert model(x).shape == (2, 10)
    again = _roundtrip(model, "resnet")
    assert len(again.layer2) == 1 and torch.equal(again(x), model(x))


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "vgg_bn", "resnet", "mobilenet", "cnn1d"])
def test_channel_pruned_copy_runs_and_reloads(name):
    """Torch-Pruning (the library prune.channel builds on) can thin these models; the thinned
    copy still runs and reloads from reference + spec."""
    tp = pytest.importorskip("torch_pruning")
    model, x = copy.deepcopy(built(name)), example(name)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[head]).step()
    assert sum(p.numel() for p in model.parameters()) < 0.5 * zoo.info(name)["params"]
    assert torch.equal(_roundtrip(model, name)(x), model(x))


def _onnx_check(model, x, *, dynamo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            data = torch.onnx.export(model, (x,), dynamo=True, verbose=False).model_proto
            data = data.SerializeToString()
        else:
            f = io.BytesIO()
            torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
            data = f.getvalue()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = x if dynamo else torch.cat([x, x.flip(0), x * 0.5])  # another batch size
    got = session.run(None, {session.get_inputs()[0].name: feed.numpy()})[0]
    np.testing.assert_allclose(got, model(feed).detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_runs_in_onnxruntime(name):
    """The TorchScript exporter (dynamo=False), with a dynamic batch axis."""
    _onnx_check(built(name), example(name), dynamo=False)


def test_onnx_dynamo_export_runs_in_onnxruntime():
    """The torch.export-based exporter works too (slower to run); checked on the GRU."""
    _onnx_check(built("gru"), example("gru"), dynamo=True)


@pytest.mark.parametrize("name", NAMES)
def test_trains_a_few_steps(name):
    model = built(name).train()
    before = copy.deepcopy(model.state_dict())
    x = example(name, n=16)
    y = torch.arange(16) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert {k for k in before if k.endswith("weight")} <= set(changed)
