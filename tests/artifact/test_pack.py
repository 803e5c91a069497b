"""pack -> unpack reproduces models bit for bit; encodings are chosen by argument, hint, default."""
import re

import pytest
import torch
from torch import nn

from dnnzip.artifact import pack, read_manifest, unpack
from dnnzip.errors import ConfigError, DataError, FormatError
from dnnzip.nn.spec import spec_module

torch.set_num_threads(1)


def shared(model, levels=(-0.25, 0.0, 0.125, 0.5), sparsity=0.7, seed=0):
    """Make every weight one of a few values, most of them zero (pruned + clustered)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                vals = torch.tensor(levels)[torch.randint(0, len(levels), p.shape, generator=g)]
                vals[torch.rand(p.shape, generator=g) < sparsity] = 0.0
                p.copy_(vals)
    return model


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(),
                         nn.Linear(12, 3))


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape
        and torch.equal(sa[k], sb[k]) for k in sa)


LOSSLESS = [("raw", {}), ("codebook", {"coder": "ans"}), ("codebook", {"coder": "huffman"}),
            ("codebook", {"coder": "none"}), ("sparse", {}),
            ("sparse", {"values": "codebook", "coder": "huffman", "gap_bits": 3})]


@pytest.mark.parametrize("enc", LOSSLESS, ids=lambda e: f"{e[0]}-{'-'.join(map(str, e[1].values()))}")
def test_lossless_round_trip_with_template(tmp_path, enc):
    model = shared(mlp())
    model.train()(torch.randn(8, 16))  # fill BatchNorm statistics
    path = tmp_path / "m.dnz"
    n = pack(model, path, encodings={"re:.*\\.weight": enc}, ref={"template": "mlp"})
    assert n == path.stat().st_size
    back = unpack(path, template=mlp())
    assert same_state(model, back) and not back.training
    x = torch.randn(4, 16)
    assert torch.equal(model.eval()(x), back(x))


def test_zoo_model_round_trip_without_template(tmp_path):
    zoo = pytest.importorskip("dnnzip.zoo")
    model = shared(zoo.build("lenet5"), sparsity=0.9)
    path = tmp_path / "lenet5.dnz"
    dense = pack(model, tmp_path / "dense.dnz", encodings={"re:.*": "raw"})
    small = pack(model, path, encodings={"re:.*weight": ("sparse", {"values": "codebook"})})
    assert small < dense / 10
    back = unpack(path)
    assert same_state(model, back)
    assert back._dnnzip_ref == model._dnnzip_ref
    auto = pack(model, tmp_path / "auto.dnz")  # no encodings: smallest lossless per tensor
    assert auto <= small * 1.05 and same_state(model, unpack(tmp_path / "auto.dnz"))


def test_pruned_shapes_are_rebuilt_from_the_structure(tmp_path):
    model = mlp()
    model[1] = nn.Linear(16, 5)  # "pruned" from 12 to 5 outputs
    model[2] = nn.BatchNorm1d(5)
    model[4] = nn.Linear(5, 3)
    path = tmp_path / "p.dnz"
    pack(model, path, ref={"template": "mlp"})
    back = unpack(path, template=mlp())
    assert back[1].out_features == 5 and same_state(model, back)


def test_template_is_not_modified(tmp_path):
    model, template = shared(mlp()), mlp()
    before = {k: v.clone() for k, v in template.state_dict().items()}
    pack(model, tmp_path / "t.dnz", ref={"template": "mlp"})
    unpack(tmp_path / "t.dnz", template=template)
    assert all(torch.equal(before[k], v) for k, v in template.state_dict().items())


def test_encoding_priority_argument_over_hint_over_raw(tmp_path):
    @spec_module("test.HintedLinear")
    class HintedLinear(nn.Linear):
        def spec_kwargs(self):
            return {"in_features": self.in_features, "out_features": self.out_features}

        def dnnzip_encodings(self):
            return {"weight": ("codebook", {"coder": "huffman"}), "bias": "fp16"}

    model = nn.Sequential(HintedLinear(4, 4), nn.Linear(4, 2))
    shared(model)
    path = tmp_path / "h.dnz"
    pack(model, path, ref={"template": "h"}, encodings={"0.bias": "raw", "re:1\\..*": "fp16"})
    t = read_manifest(path)["tensors"]
    assert t["0.weight"]["encoding"] == "codebook"       # module hint
    assert t["0.weight"]["meta"]["indices"]["coder"] == "huffman"
    assert t["0.bias"]["encoding"] == "raw"              # exact key beats the hint
    assert t["1.weight"]["encoding"] == "fp16"           # re: pattern
    back = unpack(path, template=nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
    assert isinstance(back[0], HintedLinear)
    assert torch.equal(back[0].weight, model[0].weight)


def test_every_dtype_round_trips(tmp_path):
    class Buffers(nn.Module):
        def __init__(self):
            super().__init__()
            for i, dt in enumerate([torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                    torch.int8, torch.uint8, torch.int16, torch.int32,
                                    torch.int64, torch.bool]):
                self.register_buffer(f"b{i}", (torch.arange(6).reshape(2, 3) % 3).to(dt))

    model = Buffers()
    with torch.no_grad():
        model.b3 += 0.5  # bfloat16 with a fraction
    path = tmp_path / "d.dnz"
    pack(model, path, ref={"template": "b"}, encodings={"b3": "codebook", "b0": "sparse"})
    assert same_state(model, unpack(path, template=Buffers()))


def test_lossy_encodings_stay_close(tmp_path):
    model = mlp()
    path = tmp_path / "q.dnz"
    pack(model, path, ref={"template": "mlp"}, encodings={"1.weight": "int8", "4.weight": "fp16"})
    back = unpack(path, template=mlp())
    w, wb = model[1].weight, back[1].weight
    step = (w.max(dim=1).values.clamp(min=0) - w.min(dim=1).values.clamp(max=0)) / 255
    assert ((w - wb).abs() <= step[:, None] * 0.5001 + 1e-7).all()
    assert torch.allclose(model[4].weight, back[4].weight, atol=1e-3)


def test_nan_weights_are_a_data_error_naming_the_tensor(tmp_path):
    model = mlp()
    with torch.no_grad():
        model[4].weight[0, 0] = float("nan")
    with pytest.raises(DataError, match=re.escape("'4.weight'")):
        pack(model, tmp_path / "n.dnz", ref={"template": "mlp"})
    assert not (tmp_path / "n.dnz").exists()


def test_model_without_reference_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="_dnnzip_ref.*template"):
        pack(mlp(), tmp_path / "x.dnz")
    pack(mlp(), tmp_path / "x.dnz", ref={"template": "mlp"})
    with pytest.raises(ConfigError, match="template="):
        unpack(tmp_path / "x.dnz")


def test_builder_reference_needs_trust(tmp_path):
    pack(mlp(), tmp_path / "b.dnz", ref={"builder": "os:system", "kwargs": {"command": "false"}})
    with pytest.raises(ConfigError, match="trust_builder"):
        unpack(tmp_path / "b.dnz")


def test_encoding_errors_name_the_tensor(tmp_path):
    with pytest.raises(DataError, match="'1.weight'.*distinct values"):
        pack(mlp(), tmp_path / "e.dnz", ref={"template": "mlp"},
             encodings={"1.weight": ("codebook", {"bits": 2})})
    with pytest.raises(ConfigError, match="unknown encoding"):
        pack(mlp(), tmp_path / "e.dnz", ref={"template": "mlp"}, encodings={"1.weight": "zip"})


class Net(nn.Module):  # an unregistered top-level class: the template must provide it
    def __init__(self, extra=False):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        if extra:
            self.scale = nn.Parameter(torch.ones(2))


def test_template_that_does_not_match_the_manifest_is_a_format_error(tmp_path):
    pack(Net(), tmp_path / "m.dnz", ref={"template": "Net"})
    assert isinstance(unpack(tmp_path / "m.dnz", template=Net()), Net)
    with pytest.raises(FormatError, match="missing.*scale"):
        unpack(tmp_path / "m.dnz", template=Net(extra=True))
