"""load_data dispatch and the npz / folder / text / torchvision-style sources."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from dnnzip.data import from_datasets, load_data, names, synthetic
from dnnzip.errors import DataError


def _split_ids(ds):
    return [float(ds[i][0].sum()) for i in range(len(ds))]


def test_unknown_name_lists_known_ones():
    with pytest.raises(DataError) as err:
        load_data("cifar-100")
    for known in ("fashion-mnist", "digits", "mnist1d", "npz:PATH", "folder:PATH", "text:PATH"):
        assert known in str(err.value)
    assert set(names()) >= {"digits", "mnist1d", "fashion-mnist"}


def test_digits_bundle_shape_and_disjoint_splits():
    b = load_data("digits", limit=300)
    assert b.input_shape == (1, 8, 8) and b.num_classes == 10 and b.metric == "accuracy"
    x, y = next(iter(b.loader("train", batch_size=16)))
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(b.train.indices).isdisjoint(b.val.indices)
    assert set(b.calib.indices) <= set(b.train.indices)
    assert b.sizes() == {"train": 270, "val": 30, "test": 300, "calib": 270}
    assert b.example_input(4).shape == (4, 1, 8, 8)


def test_split_is_deterministic_in_seed():
    a, b, c = load_data("digits", seed=3), load_data("digits", seed=3), load_data("digits", seed=4)
    assert a.val.indices == b.val.indices and _split_ids(a.test) == _split_ids(b.test)
    assert a.val.indices != c.val.indices


def test_shuffled_loader_order_depends_only_on_seed():
    b = synthetic((3,), 2, n=40)
    first = [y.tolist() for _, y in b.loader("train", 8, shuffle=True, seed=5)]
    torch.manual_seed(123)
    again = [y.tolist() for _, y in b.loader("train", 8, shuffle=True, seed=5)]
    other = [y.tolist() for _, y in b.loader("train", 8, shuffle=True, seed=6)]
    assert first == again and first != other


def test_mnist1d_offline_and_leaves_global_rng_alone():
    random.seed(1)
    np.random.seed(1)
    want = (random.random(), np.random.rand())
    random.seed(1)
    np.random.seed(1)
    b = load_data("mnist1d")
    assert (random.random(), np.random.rand()) == want
    assert b.input_shape == (1, 40) and len(b.test) == 1000
    assert b.sizes()["train"] + b.sizes()["val"] == 4000


def test_limit_and_describe():
    b = synthetic((2, 3), 3, n=100).limit(10)
    assert all(v <= 10 for v in b.sizes().values())
    d = b.describe()
    assert d["input_shape"] == [2, 3] and d["num_classes"] == 3 and d["info"]["limit"] == 10


# ---------------------------------------------------------------- npz
def test_npz_single_pool(tmp_path):
    x = np.random.default_rng(0).random((50, 6)).astype(np.float32)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    b = load_data(f"npz:{tmp_path / 'd.npz'}")
    assert b.input_shape == (6,) and b.num_classes == 5 and len(b.test) == 10


def test_npz_explicit_splits_and_uint8_scaling(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", x_train=rng.integers(0, 256, (20, 1, 4, 4), dtype=np.uint8),
             y_train=np.arange(20) % 2, x_test=np.full((5, 1, 4, 4), 255, np.uint8),
             y_test=np.ones(5, int), x_val=np.zeros((3, 1, 4, 4), np.uint8), y_val=np.zeros(3, int))
    b = load_data(f"npz:{tmp_path / 's.npz'}")
    assert b.sizes()["train"] == 20 and b.sizes()["val"] == 3
    assert float(b.test[0][0].max()) == 1.0


@pytest.mark.parametrize("arrays,match", [
    ({"a": np.zeros(3)}, "expected 'x' and 'y'"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, "4 inputs but 3 labels"),
    ({"x": np.array([[1.0, np.nan]] * 5), "y": np.zeros(5)}, "NaN"),
    ({"x": np.zeros((5, 2)), "y": np.array([0, 1, -1, 0, 1])}, ">= 0"),
    ({"x": np.zeros((5, 2)), "y": np.array([0, 0.5, 1, 0, 1])}, "non-integer"),
    ({"x": np.zeros(5), "y": np.zeros(5)}, "feature dimension"),
    ({"x": np.zeros((0, 2)), "y": np.zeros(0)}, "empty"),
    ({"x_train": np.zeros((5, 2)), "y_train": np.zeros(5), "x_test": np.zeros((2, 3)),
      "y_test": np.zeros(2)}, "same per-sample shape"),
])
def test_npz_validation(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_data(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_refuses_pickles_and_missing_files(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4))
    with pytest.raises(DataError, match="without pickles"):
        load_data(f"npz:{tmp_path / 'p.npz'}")
    with pytest.raises(DataError, match="not found"):
        load_data(f"npz:{tmp_path / 'none.npz'}")


def test_npz_too_few_samples_for_every_split(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(DataError, match="at least 3"):
        load_data(f"npz:{tmp_path / 't.npz'}")


# ---------------------------------------------------------------- folder
def _png(path, value, shape=(6, 5)):
    import matplotlib.image as mpimg
    path.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(path, np.full(shape, value, np.float32), cmap="gray", vmin=0, vmax=1)


def _tree(root, per_class=6):
    for c, cls in enumerate(("cat", "dog", "owl")):
        for i in range(per_class):
            _png(root / cls / f"{i}.png", c / 2)
    return root


def test_folder_classes_and_shape(tmp_path):
    b = load_data(f"folder:{_tree(tmp_path / 'ds')}")
    assert b.num_classes == 3 and b.info["classes"] == ["cat", "dog", "owl"]
    assert b.input_shape[1:] == (6, 5) and b.input_shape[0] in (1, 3)
    for x, y in (b.test[i] for i in range(len(b.test))):
        assert abs(float(x.mean()) - int(y) / 2) < 0.02  # label follows the folder


def test_folder_train_test_subfolders(tmp_path):
    _tree(tmp_path / "ds" / "train", 5)
    _tree(tmp_path / "ds" / "test", 2)
    b = load_data(f"folder:{tmp_path / 'ds'}")
    assert len(b.test) == 6 and b.sizes()["train"] + b.sizes()["val"] == 15


def test_folder_rejects_symlink_escaping(tmp_path):
    root = _tree(tmp_path / "ds")
    _png(tmp_path / "secret" / "x.png", 0.5)
    os.symlink(tmp_path / "secret" / "x.png", root / "cat" / "link.png")
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_data(f"folder:{root}")


def test_folder_rejects_class_dir_symlink_escaping(tmp_path):
    root = _tree(tmp_path / "ds")
    _tree(tmp_path / "other")
    os.symlink(tmp_path / "other" / "cat", root / "zebra")
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_data(f"folder:{root}")


def test_folder_symlink_inside_is_fine(tmp_path):
    root = _tree(tmp_path / "ds")
    os.symlink(root / "cat" / "0.png", root / "cat" / "alias.png")
    assert load_data(f"folder:{root}").num_classes == 3


def test_folder_mixed_shapes_and_empty_class(tmp_path):
    root = _tree(tmp_path / "ds")
    _png(root / "dog" / "big.png", 0.1, shape=(9, 9))
    with pytest.raises(DataError, match="different shapes"):
        load_data(f"folder:{root}")
    (root / "dog" / "big.png").unlink()
    (root / "emu").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_data(f"folder:{root}")
    with pytest.raises(DataError, match="not a directory"):
        load_data(f"folder:{tmp_path / 'missing'}")


# ---------------------------------------------------------------- text
def test_text_unlabelled(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("\n".join(f"sentence number {i}" for i in range(30)) + "\n\n")
    b = load_data(f"text:{p}")
    assert b.metric == "cosine" and b.num_classes == 0 and b.input_shape == ()
    text, label = b.train[0]
    assert isinstance(text, str) and int(label) == -1
    xs, ys = next(iter(b.loader("test", batch_size=4)))
    assert isinstance(xs, list) and isinstance(xs[0], str) and ys.dtype == torch.int64
    assert isinstance(b.example_input(3), list)
    assert sum(b.sizes()[s] for s in ("train", "val", "test")) == 30


def test_text_labelled(tmp_path):
    p = tmp_path / "l.tsv"
    p.write_text("".join(f"{'pos' if i % 2 else 'neg'}\ttext {i}\twith tab\n" for i in range(20)))
    b = load_data(f"text:{p}")
    assert b.num_classes == 2 and b.info["classes"] == ["neg", "pos"]
    texts = {b.test[i][0] for i in range(len(b.test))}
    assert all(t.startswith("text ") and t.endswith("\twith tab") for t in texts)


def test_text_errors(tmp_path):
    (tmp_path / "m.tsv").write_text("a\tone\nno label here\n")
    with pytest.raises(DataError, match="line 2"):
        load_data(f"text:{tmp_path / 'm.tsv'}")
    (tmp_path / "e.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no non-empty lines"):
        load_data(f"text:{tmp_path / 'e.txt'}")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="UTF-8"):
        load_data(f"text:{tmp_path / 'b.txt'}")


# ---------------------------------------------------------------- torchvision-style
class _Labelled(torch.utils.data.Dataset):
    classes = ["a", "b", "c"]

    def __init__(self, n, as_array=False):
        self.x = torch.randn(n, 2, 3)
        self.as_array = as_array

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return (self.x[i].numpy() if self.as_array else self.x[i]), i % 3


def test_from_datasets_converts_and_carves_val():
    b = from_datasets(_Labelled(40, as_array=True), _Labelled(9), name="toy", seed=1)
    assert b.input_shape == (2, 3) and b.num_classes == 3
    x, y = b.train[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert b.sizes()["train"] + b.sizes()["val"] == 40


def test_from_datasets_rejects_untransformed_images():
    class Raw(_Labelled):
        def __getitem__(self, i):
            return "not a tensor", 0

    with pytest.raises(DataError, match="transform=ToTensor"):
        from_datasets(Raw(10), Raw(4))


def test_from_datasets_checks_samples_on_access():
    class Odd(_Labelled):
        def __getitem__(self, i):
            x = torch.zeros(2, 3) if i < 5 else torch.zeros(2, 4)
            if i == 3:
                x[0, 0] = float("nan")
            return x, 0

    b = from_datasets(Odd(10), Odd(10), val_fraction=0.5, limit=None)
    with pytest.raises(DataError, match="NaN"):
        b.test[3]
    with pytest.raises(DataError, match=r"sample 7 has shape \(2, 4\)"):
        b.test[7]


def test_empty_split_is_a_data_error():
    with pytest.raises(DataError, match="test dataset is empty"):
        from_datasets(_Labelled(10), TensorDataset(torch.zeros(0, 2, 3), torch.zeros(0)))
    from dnnzip.data import make_bundle
    with pytest.raises(DataError, match="train split is empty"):
        make_bundle("e", np.zeros((0, 3)), np.zeros(0, int), np.zeros((2, 3)), np.zeros(2, int))
    with pytest.raises(DataError, match="limit must be >= 1"):
        synthetic((3,), 2, n=40).limit(0)


def test_wrong_shape_is_a_data_error():
    from dnnzip.data import DataBundle
    good = synthetic((3,), 2, n=40)
    with pytest.raises(DataError, match=r"shape \(3,\), expected input_shape \(4,\)"):
        DataBundle("x", good.train, good.val, good.test, good.calib, (4,), 2)
    with pytest.raises(DataError, match="val split is empty"):
        DataBundle("x", good.train, TensorDataset(torch.zeros(0, 3)), good.test, good.calib,
                   (3,), 2)
