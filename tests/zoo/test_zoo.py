"""The zoo's registry: names, info, build-from-name, references and option validation."""
import json

import pytest
import torch
from torch import nn

from dnnzip import zoo
from dnnzip.errors import ConfigError

NAMES = ["lenet300", "lenet5", "vgg_bn", "resnet", "mobilenet", "shufflenet",
         "cnn1d", "gru", "lstm", "deepsense", "minilm"]
GRID = NAMES[:-1]  # image and series models; minilm (token ids) has tests/zoo/test_minilm.py


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_names():
    assert zoo.names() == NAMES


def test_paper_parameter_counts():
    assert n_params(zoo.build("lenet300")) == 266_610
    assert n_params(zoo.build("lenet5")) == 431_080
    assert n_params(zoo.build("lenet5", conv_relu=False)) == 431_080


def test_lenet5_macs_match_caffe():
    model, macs = zoo.build("lenet5"), {}

    def hook(name):
        def count(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs[name] = out[0].numel() * k
            else:
                macs[name] = mod.in_features * mod.out_features
        return count

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod.register_forward_hook(hook(name))
    model(torch.zeros(1, 1, 28, 28))
    assert macs == {"conv1": 288_000, "conv2": 1_600_000, "fc1": 400_000, "fc2": 5_000}
    assert sum(macs.values()) == 2_293_000


def test_lenet300_accepts_flat_and_image_input():
    model = zoo.build("lenet300").eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), model(x.reshape(3, 784)))


@pytest.mark.parametrize("name", GRID)
def test_info(name):
    meta = zoo.info(name)
    assert meta["description"] and meta["dataset"] in ("fashion-mnist", "mnist1d")
    assert meta["params"] == n_params(zoo.build(name))
    assert {"num_classes", "in_channels"} <= set(meta["options"])
    assert ("input_size" in meta["options"]) != ("length" in meta["options"])
    out = zoo.build(name).eval()(torch.randn(2, *meta["input_shape"]))
    assert out.shape == (2, 10)
    json.dumps(meta)


@pytest.mark.parametrize("name", GRID)
def test_reference_round_trips_through_json(name):
    geometry = {"input_size": 8} if "input_size" in zoo.options(name) else {"length": 24}
    kwargs = {"num_classes": 4, "in_channels": 2, **geometry}
    torch.manual_seed(0)
    model = zoo.build(name, **kwargs).eval()
    assert model._dnnzip_ref == {"zoo": name, "kwargs": kwargs}
    ref = json.loads(json.dumps(model._dnnzip_ref))
    torch.manual_seed(1)
    again = zoo.from_ref(ref).eval()
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                     again.state_dict().values()))
    again.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(3, 2, 8, 8) if "input_size" in geometry else torch.randn(3, 2, 24)
    assert torch.equal(model(x), again(x))


def test_reference_kwargs_are_json_normalised():
    model = zoo.build("resnet", blocks=(1, 2, 1))
    assert model._dnnzip_ref["kwargs"] == {"blocks": [1, 2, 1]}
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [1, 2, 1]


def test_unknown_model_lists_the_names():
    with pytest.raises(ConfigError, match="unknown zoo model 'lenet7'.*lenet300, lenet5, vgg_bn"):
        zoo.build("lenet7")
    with pytest.raises(ConfigError, match="unknown zoo model"):
        zoo.info("nope")


def test_unknown_option_names_it_and_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        zoo.build("resnet", depth=20, width=0.5)
    msg = str(err.value)
    assert "'depth'" in msg and "'width'" not in msg.split("valid")[0]
    for option in ("num_classes=10", "in_channels=1", "input_size=28", "width=1.0", "blocks=2"):
        assert option in msg


@pytest.mark.parametrize("name,kwargs,param", [
    ("lenet300", {"num_classes": 0}, "num_classes"),
    ("lenet300", {"hidden": [300]}, "hidden"),
    ("lenet5", {"input_size": 12, "padding": 0}, "input_size"),
    ("lenet5", {"in_channels": 1.5}, "in_channels"),
    ("vgg_bn", {"width": 0}, "width"),
    ("vgg_bn", {"input_size": [28, 4]}, "input_size"),
    ("resnet", {"blocks": [1, 2]}, "blocks"),
    ("mobilenet", {"width_mult": -1}, "width_mult"),
    ("shufflenet", {"groups": 5}, "groups"),
    ("cnn1d", {"length": 2}, "length"),
    ("gru", {"pool": "max"}, "pool"),
    ("lstm", {"hidden": True}, "hidden"),
    ("deepsense", {"intervals": 7}, "intervals"),
])
def test_bad_option_value_names_the_parameter(name, kwargs, param):
    with pytest.raises(ConfigError, match=f"The '{param}' parameter of zoo model '{name}'"):
        zoo.build(name, **kwargs)


def test_non_json_option_is_refused():
    with pytest.raises(ConfigError, match="JSON"):
        zoo.build("vgg_bn", width=float("nan"))
    with pytest.raises(ConfigError, match="JSON"):
        zoo.build("lenet5", num_classes=torch.tensor(3))


def test_register_a_model(monkeypatch):
    monkeypatch.setattr(zoo, "_ENTRIES", dict(zoo._ENTRIES))
    monkeypatch.setattr(zoo, "_PARAMS", {})

    @zoo.register("tiny", description="two linears", input_shape=(4,), dataset="npz:x.npz")
    def tiny(*, num_classes: int = 3, hidden: int = 5):
        return nn.Sequential(nn.Linear(4, hidden), nn.Linear(hidden, num_classes))

    assert "tiny" in zoo.names()
    assert zoo.build("tiny", hidden=2)._dnnzip_ref == {"zoo": "tiny", "kwargs": {"hidden": 2}}
    assert zoo.info("tiny")["params"] == 4 * 5 + 5 + 5 * 3 + 3
    with pytest.raises(ConfigError, match="already registered"):
        zoo.register("tiny", description="", input_shape=(4,), dataset="")(lambda: None)
