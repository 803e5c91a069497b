"""Pruned models pack to .dnz with their new shapes and reload without pickle."""
import pytest
import torch

from dnnzip import zoo
from dnnzip.artifact import pack, unpack
from dnnzip.registry import Context, apply


@pytest.mark.parametrize("name,technique,options", [
    ("resnet", "prune.channel", {"ratio": 0.5, "finetune": False}),
    ("deepsense", "prune.channel", {"ratio": 0.5, "criterion": "thinet", "finetune": False}),
    ("lenet300", "prune.connection", {"sparsity": 0.9}),
])
def test_pack_unpack_identical(name, technique, options, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, *zoo.info(name)["input_shape"])
    out = apply(technique, zoo.build(name).eval(), options, Context(example_input=x, epochs=0))
    path = tmp_path / "m.dnz"
    size = pack(out, path)
    assert size == path.stat().st_size
    back = unpack(path)
    assert torch.equal(back(x), out(x))
    assert {k: v.shape for k, v in back.state_dict().items()} == \
        {k: v.shape for k, v in out.state_dict().items()}
