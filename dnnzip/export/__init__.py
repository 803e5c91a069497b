"""Export a model for deployment: ONNX (``onnx.py``); C for MCUs comes later (``c/``)."""
from dnnzip.export.onnx import check_onnx, to_onnx

__all__ = ["to_onnx", "check_onnx"]
