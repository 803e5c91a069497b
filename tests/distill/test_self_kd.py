import torch

from dnnzip import registry
from dnnzip.distill.self_kd import ClassPairs
from dnnzip.registry import Context

from .conftest import mlp, train_ce


def test_pairs_share_the_class_and_differ_in_index(digits):
    pairs = ClassPairs(digits.train, seed=0)
    for i in range(0, 200, 7):
        j = pairs.partner(i)
        assert j != i and int(pairs.labels[j]) == int(pairs.labels[i])
    x, y, x2 = pairs[3]
    assert x.shape == x2.shape


def test_cs_kd_trains_and_reports(digits):
    model = train_ce(mlp(hidden=16, seed=2), digits, epochs=1)
    ctx = Context(data=digits, epochs=2, batch_size=64, lr=5e-3, seed=0)
    out = registry.apply("distill.self", model, {"lam": 1.0}, ctx)
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                         out.state_dict().values()))
    assert changed
    rep = ctx.extra["distill"]["distill.self"]
    assert rep["accuracy_after"] > 0.8
