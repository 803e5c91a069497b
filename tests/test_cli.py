"""The CLI as a user drives it: exit codes 0/1/2, --json output, named errors, no partial files."""
from __future__ import annotations

import json

import pytest
import torch

from dnnzip import cli, zoo


def run(capsys, *args):
    code = 0
    try:
        cli.main(list(args))
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ok(capsys, *args):
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return out


def test_zoo_json_lists_models_datasets_techniques(capsys):
    d = json.loads(ok(capsys, "zoo", "--json"))
    assert {"lenet300", "lenet5", "gru"} <= set(d["models"])
    assert d["models"]["lenet5"]["params"] == 431_080
    assert "fashion-mnist" in d["datasets"] and "identity" in d["techniques"]


def test_unknown_model_and_dataset_exit_2(capsys):
    code, _, err = run(capsys, "profile", "nosuchnet")
    assert code == 2 and "nosuchnet" in err
    code, _, err = run(capsys, "eval", "lenet5", "--data", "nosuchdata")
    assert code == 2 and "nosuchdata" in err


def test_malformed_budget_exit_2(capsys):
    code, _, err = run(capsys, "profile", "lenet300", "--max-size", "12XB")
    assert code == 2 and "size" in err


def test_profile_json_and_budget_verdict(capsys):
    d = json.loads(ok(capsys, "profile", "lenet5", "--json", "--runtime", "torch",
                      "--repeats", "5"))
    assert d["params_total"] == 431_080
    assert d["macs_dense"] == 2_293_000
    code, out, err = run(capsys, "profile", "lenet5", "--runtime", "torch", "--repeats", "5",
                         "--max-size", "1KB", "--json")
    assert code == 1 and "does not fit" in err
    assert json.loads(out)["budget"]["fits"] is False


def test_train_pack_unpack_eval_round_trip(capsys, tmp_path):
    w = tmp_path / "m.safetensors"
    d = json.loads(ok(capsys, "train", "lenet300", "--data", "digits", "--epochs", "2", "-o",
                      str(w), "--json"))
    assert w.stat().st_size == d["bytes"]
    art = tmp_path / "m.dnz"
    d = json.loads(ok(capsys, "pack", str(w), "-o", str(art), "--json"))
    assert art.stat().st_size == d["bytes"]
    acc_w = json.loads(ok(capsys, "eval", str(w), "--data", "digits", "--json"))["test_accuracy"]
    acc_a = json.loads(ok(capsys, "eval", str(art), "--data", "digits", "--json"))["test_accuracy"]
    assert acc_w == acc_a > 0.3
    acc_o = json.loads(ok(capsys, "eval", str(art), "--data", "digits", "--runtime",
                          "onnxruntime", "--json"))["test_accuracy"]
    assert abs(acc_o - acc_a) < 0.01
    back = tmp_path / "back.safetensors"
    ok(capsys, "unpack", str(art), "-o", str(back))
    assert back.is_file()


def test_pickled_module_refused_without_opt_in(capsys, tmp_path):
    p = tmp_path / "whole.pt"
    torch.save(zoo.build("lenet300"), p)
    code, _, err = run(capsys, "pack", str(p), "-o", str(tmp_path / "x.dnz"))
    assert code == 2 and "--trust-pickle" in err
    assert not (tmp_path / "x.dnz").exists()
    ok(capsys, "pack", str(p), "-o", str(tmp_path / "x.dnz"), "--trust-pickle")


def test_corrupt_artifact_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.dnz"
    bad.write_bytes(b"\xff" * 64)
    code, _, err = run(capsys, "eval", str(bad), "--data", "digits")
    assert code == 2 and "FormatError" in err


def test_weights_without_architecture_named(capsys, tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "bare.safetensors"
    save_file(zoo.build("lenet300").state_dict(), str(p))
    code, _, err = run(capsys, "pack", str(p), "-o", str(tmp_path / "x.dnz"))
    assert code == 2 and "--arch" in err
    ok(capsys, "pack", str(p), "--arch", "lenet300", "-o", str(tmp_path / "x.dnz"))


def test_eval_capacity_of_a_multi_capacity_artifact(capsys, tmp_path):
    from dnnzip import registry
    from dnnzip.artifact import pack
    from dnnzip.data import load_data
    from dnnzip.registry import Context
    data = load_data("digits", seed=0)
    base = zoo.build("lenet300", input_size=8, hidden=[32, 16])
    nested = registry.apply("capacity.nest", base, {"capacities": [0.5, 1.0]},
                            Context(data=data, epochs=1, max_batches=3))
    art = tmp_path / "nest.dnz"
    pack(nested, art)
    for cap in ("0", "1"):
        d = json.loads(ok(capsys, "eval", str(art), "--data", "digits", "--capacity", cap,
                          "--json"))
        assert 0.0 <= d["test_accuracy"] <= 1.0
    code, _, err = run(capsys, "eval", str(art), "--data", "digits", "--capacity", "5")
    assert code == 2 and "capacity 5 does not exist" in err
