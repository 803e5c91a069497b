"""User weights: safetensors and weights-only .pt load; pickled modules need the named opt-in."""
import pytest
import torch
from torch import nn

from dnnzip.artifact.weights import load_weights, save_weights
from dnnzip.errors import DataError, FormatError


def state():
    return nn.Linear(3, 2).state_dict()


def test_safetensors_round_trip_atomic(tmp_path):
    sd = state()
    path = tmp_path / "w.safetensors"
    n = save_weights(sd, path)
    assert n == path.stat().st_size and [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    back = load_weights(path)
    assert all(torch.equal(sd[k], back[k]) for k in sd)


def test_shared_tensors_can_be_saved(tmp_path):
    w = torch.randn(2, 2)
    save_weights({"a": w, "b": w}, tmp_path / "s.safetensors")
    back = load_weights(tmp_path / "s.safetensors")
    assert torch.equal(back["a"], back["b"])


def test_plain_state_dict_pt_loads_without_opt_in(tmp_path):
    sd = state()
    torch.save(sd, tmp_path / "w.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    assert torch.equal(load_weights(tmp_path / "w.pt")["weight"], sd["weight"])
    assert torch.equal(load_weights(tmp_path / "ckpt.pth")["bias"], sd["bias"])


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


def test_pickled_module_is_refused_without_trust(tmp_path):
    torch.save(Custom(), tmp_path / "model.pt")
    with pytest.raises(FormatError, match="--trust-pickle"):
        load_weights(tmp_path / "model.pt")
    model = load_weights(tmp_path / "model.pt", trust_pickle=True)
    assert isinstance(model, Custom)


def test_nan_weights_are_a_data_error(tmp_path):
    sd = state()
    sd["weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(DataError, match="'weight'"):
        load_weights(tmp_path / "nan.pt")
    with pytest.raises(DataError, match="'weight'"):
        save_weights(sd, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


def test_bad_files_are_format_errors(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    (tmp_path / "w.onnx").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    for name, match in [("junk.safetensors", "not a valid safetensors"), ("junk.pt", "trust-pickle"),
                        ("w.onnx", "unknown weights format"), ("missing.pt", "no such"),
                        ("list.pt", "expected a state_dict")]:
        with pytest.raises(FormatError, match=match):
            load_weights(tmp_path / name)
