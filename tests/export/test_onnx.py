"""to_onnx: valid file, dynamic batch, atomic, named error on an unexportable op."""
from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from dnnzip import zoo
from dnnzip.errors import ConfigError, FormatError, UnsupportedLayerError
from dnnzip.export import check_onnx, export_model, to_onnx


def test_export_valid_and_matches(tmp_path):
    model = zoo.build("lenet5")
    path = to_onnx(model, torch.randn(1, 1, 28, 28), tmp_path / "sub" / "lenet5.onnx")
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert m.opset_import[0].version == 17
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert check_onnx(model, path, torch.randn(6, 1, 28, 28)) < 1e-4
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["lenet5.onnx"]


class Eig(nn.Module):
    def forward(self, x):
        return torch.linalg.eig(x)[0].real


def test_unexportable_op_is_named_and_leaves_no_file(tmp_path):
    with pytest.raises(UnsupportedLayerError, match=r"linalg_eig.*--runtime torch"):
        to_onnx(Eig(), torch.randn(3, 3), tmp_path / "eig.onnx", exporter="legacy")
    assert list(tmp_path.iterdir()) == []


def test_check_onnx_detects_a_different_model(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    path = to_onnx(model, torch.randn(1, 4), tmp_path / "lin.onnx")
    with torch.no_grad():
        model[0].bias += 1.0
    with pytest.raises(FormatError, match="differs"):
        check_onnx(model, path, torch.randn(2, 4))


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="exporter"):
        to_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "x.onnx", exporter="tf")
    with pytest.raises(ConfigError, match="opset"):
        to_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "x.onnx", opset=3)
    with pytest.raises(ConfigError, match="formats: onnx, onnx-int8, c"):
        export_model(nn.Linear(2, 2), tmp_path / "x", format="tflite", example=torch.randn(1, 2))
