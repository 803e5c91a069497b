"""The metric of a model on a split, executed on a named runtime (the number the user is shown)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dnnzip.errors import DataError


def evaluate_on(model: nn.Module, data, *, split: str = "test", runtime: str = "torch",
                batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``data.<split>`` executed by ``runtime``.

    On ``onnxruntime`` the model is exported (int8 models as their QDQ graph) and the accuracy is
    ONNX Runtime's, not the PyTorch simulation's.
    """
    if data is None:
        raise DataError("evaluation needs data: pass --data (e.g. fashion-mnist)")
    dataset = getattr(data, split, None)
    if dataset is None or len(dataset) == 0:
        raise DataError(f"the {split!r} split of {getattr(data, 'name', 'the dataset')} is empty")
    if runtime == "torch":
        from dnnzip.train import evaluate
        return evaluate(model, dataset, batch_size=batch_size)
    from dnnzip.runtime import get_runtime
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    first = next(iter(loader))[0]
    session = get_runtime(runtime).prepare(model.eval(), first[:1])
    correct = total = 0
    for x, y in loader:
        logits = np.asarray(session.run(x.numpy()))
        correct += int((logits.argmax(-1) == y.numpy()).sum())
        total += len(y)
    return correct / total
