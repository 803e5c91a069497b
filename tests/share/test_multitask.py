import dataclasses

import pytest
import torch
from torch.utils.data import Dataset

from dnnzip import zoo
from dnnzip.artifact import pack, unpack
from dnnzip.data import load_data
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.share.branch import branch_train
from dnnzip.share.multitask import (MultiHead, auto_share, evaluate_tasks, layers_of, mtz_merge,
                                    shared_from_scratch, train_multitask)
from dnnzip.train import TrainSettings, evaluate, fit


class Relabel(Dataset):
    def __init__(self, base, fn):
        self.base, self.fn = base, fn

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x, torch.as_tensor(self.fn(int(y)), dtype=torch.int64)


def grouped(bundle, fn, k):
    return dataclasses.replace(bundle, name=bundle.name + f"-{k}", num_classes=k,
                               **{s: Relabel(getattr(bundle, s), fn)
                                  for s in ("train", "val", "test", "calib")})


@pytest.fixture(scope="module")
def tasks():
    """Digits as 10 classes and as 5 superclasses (0-1, 2-3, ...), one model trained on each."""
    torch.set_num_threads(1)
    ten = load_data("digits", seed=0)
    five = grouped(ten, lambda y: y // 2, 5)
    models = []
    for seed, t in enumerate((ten, five)):
        torch.manual_seed(seed)
        m = zoo.build("lenet300", input_size=8, hidden=[48, 24], num_classes=10)
        fit(m, t, TrainSettings(epochs=8, batch_size=32, lr=1e-2, progress=False))
        models.append(m.eval())
    return models, [ten, five]


def test_layers_of_is_the_model():
    m = zoo.build("lenet5", input_size=8)
    x = torch.randn(2, 1, 8, 8)
    seq = torch.nn.Sequential(*layers_of(m, x))
    torch.testing.assert_close(seq(x), m(x))
    with pytest.raises(UnsupportedLayerError, match="GRU|sequential|chains"):
        layers_of(zoo.build("gru"), torch.randn(2, 1, 40))


def test_mtz_merge_pairs_neurons_and_keeps_tasks(tasks, tmp_path):
    (a, b), (ten, five) = tasks
    before = {k: v.clone() for k, v in a.state_dict().items()}
    x = ten.example_input(4)
    multi, stats = mtz_merge(a, b, shared_layers=1, example=x, data_a=ten.train,
                             data_b=five.train)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in before.items())  # inputs untouched
    assert isinstance(multi, MultiHead) and multi.num_tasks == 2
    # matched pairs are closer than the neurons' typical size: the assignment found real pairs
    assert stats[0]["neurons"] == 48 and stats[0]["pair_distance"] < 2 * stats[0]["weight_norm"]
    zipped = evaluate_tasks(multi, [ten, five])
    train_multitask(multi, [ten, five], epochs=2, lr=3e-3, batch_size=32)
    tuned = evaluate_tasks(multi, [ten, five])
    base = [evaluate(a, ten.test), evaluate(b, five.test)]
    assert all(t >= z - 0.02 for t, z in zip(tuned, zipped))
    assert tuned[0] >= base[0] - 0.08 and tuned[1] >= base[1] - 0.08
    # one shared first layer instead of two: fewer parameters, and the file is smaller
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(multi) == n(a) + n(b) - (64 * 48 + 48)
    pa, pb, pm = tmp_path / "a.dnz", tmp_path / "b.dnz", tmp_path / "m.dnz"
    assert pack(multi, pm) < pack(a, pa) + pack(b, pb)
    back = unpack(pm)
    for t in (0, 1):
        with torch.no_grad():
            torch.testing.assert_close(back.for_task(t)(x), multi.for_task(t)(x), rtol=0, atol=0)


def test_permutation_alignment_is_exact():
    """Zipping a model with a neuron-permuted copy of itself finds the permutation: the merged
    trunk equals the original and task 1 computes exactly what task 0 does."""
    torch.manual_seed(0)
    a = zoo.build("lenet300", input_size=8, hidden=[16, 12]).eval()
    b = zoo.build("lenet300", input_size=8, hidden=[16, 12]).eval()
    b.load_state_dict(a.state_dict())
    perm = torch.randperm(16)
    with torch.no_grad():
        b.fc1.weight.copy_(a.fc1.weight[perm])
        b.fc1.bias.copy_(a.fc1.bias[perm])
        b.fc2.weight.copy_(a.fc2.weight[:, perm])
    x = torch.randn(5, 1, 8, 8)
    multi, stats = mtz_merge(a, b, shared_layers=2, example=x)
    assert stats[0]["pair_distance"] < 1e-6
    with torch.no_grad():
        ya, yb = multi.forward_all(x)
        torch.testing.assert_close(ya, a(x))
        torch.testing.assert_close(yb, a(x))


def test_bad_arguments_are_named(tasks):
    (a, b), (ten, five) = tasks
    x = ten.example_input(2)
    with pytest.raises(ConfigError, match="'shared_layers'"):
        mtz_merge(a, b, shared_layers=3, example=x)
    other = zoo.build("lenet300", input_size=8, hidden=[40, 24])
    with pytest.raises(ConfigError, match="same architecture"):
        mtz_merge(a, other, shared_layers=1, example=x)
    multi, _ = mtz_merge(a, b, shared_layers=1, example=x)
    with pytest.raises(ConfigError, match="heads"):
        train_multitask(multi, [ten])
    with pytest.raises(ConfigError, match="task"):
        multi.for_task(2)


def test_joint_training_from_scratch_eq14(tasks):
    (a, _), (ten, five) = tasks
    torch.manual_seed(0)
    multi = shared_from_scratch(a, [ten, five], shared_layers=2, example=ten.example_input(2),
                                epochs=6, lr=1e-2, batch_size=32)
    assert multi.heads[1][-1].out_features == 5
    acc = evaluate_tasks(multi, [ten, five])
    assert acc[0] > 0.85 and acc[1] > 0.85


def test_branch_backbone_frozen_and_sequential(tasks, tmp_path):
    (a, _), (ten, five) = tasks
    trunk_before = {k: v.clone() for k, v in a.state_dict().items() if k.startswith("fc1")}
    multi, rows = branch_train(a, [ten, five], split=1, settings=TrainSettings(
        epochs=4, batch_size=32, lr=1e-2, progress=False))
    assert [r["task"] for r in rows] == [0, 1]
    # the backbone is task 0's first layer, unchanged by training branch 1
    torch.testing.assert_close(multi.trunk[1].weight, trunk_before["fc1.weight"])
    assert all(not p.requires_grad for p in multi.trunk.parameters())
    assert rows[0]["accuracy"] == pytest.approx(evaluate(a, ten.test))
    assert rows[1]["accuracy"] > 0.8
    pack(multi, tmp_path / "b.dnz")
    back = unpack(tmp_path / "b.dnz")
    x = ten.example_input(3)
    with torch.no_grad():
        torch.testing.assert_close(back.for_task(1)(x), multi.for_task(1)(x), rtol=0, atol=0)


def test_auto_share_picks_deepest_trunk_within_budget(tasks):
    (a, b), (ten, five) = tasks
    x = ten.example_input(2)
    kw = dict(epochs=1, max_batches=2, batch_size=32)
    multi, rows = auto_share(a, b, [ten, five], example=x, max_drop=1.0, **kw)
    assert [r["shared_layers"] for r in rows] == [2]  # any drop allowed: deepest trunk at once
    assert len([m for m in multi.trunk if isinstance(m, torch.nn.Linear)]) == 2
    multi, rows = auto_share(a, b, [ten, five], example=x, max_drop=-1.0, **kw)
    assert [r["shared_layers"] for r in rows] == [2, 1]  # nothing fits: falls back to 1 layer
    assert len([m for m in multi.trunk if isinstance(m, torch.nn.Linear)]) == 1
