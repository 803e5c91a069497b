"""``make demo``: the main job end to end on the embedded default.

Trains LeNet-5 on Fashion-MNIST (or reuses the cached weights), then runs ``dnnzip auto`` under a
budget that no single family meets alone — 64 KB file and 88 % accuracy: int8 alone gives ~430 KB,
pruning or sharing alone stay above 100 KB at that accuracy, so the search has to combine them.
Writes the chosen ``.dnz``, ``report.html`` and a summary table into the run folder.
"""
from __future__ import annotations

import os
from pathlib import Path

DEMO_BUDGET = dict(max_size="64KB", min_accuracy="0.88")


def cache_dir() -> Path:
    from dnnzip.io import cache_root
    return cache_root()


def trained_lenet5(data, *, epochs: int, progress: bool):
    """LeNet-5 trained on ``data`` — cached by epoch count, retrained if the cache is unreadable."""
    from dnnzip import zoo
    from dnnzip.errors import DnnzipError
    from dnnzip.load import load_model, save_trained
    from dnnzip.train import TrainSettings, fit

    path = cache_dir() / f"lenet5-fashion-mnist-e{epochs}.safetensors"
    if path.is_file():
        try:
            return load_model(path)
        except DnnzipError:
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    model = zoo.build("lenet5")
    fit(model, data, TrainSettings(epochs=epochs, progress=progress, seed=0),
        checkpoint=path.with_suffix(".ckpt"))
    save_trained(model, path)
    path.with_suffix(".ckpt").unlink(missing_ok=True)
    return model.eval()


def run_demo(out_dir: str | os.PathLike = "runs/demo", *, quick: bool = False,
             progress: bool = True) -> dict:
    from dnnzip.budget import Budget
    from dnnzip.data import load_data
    from dnnzip.search import AutoConfig, auto

    data = load_data("fashion-mnist", seed=0)
    model = trained_lenet5(data, epochs=3 if quick else 12, progress=progress)
    budget = Budget.parse(**DEMO_BUDGET, runtime="onnxruntime")
    cfg = AutoConfig(trials=6 if quick else 16, seed=0, finetune_epochs=1,
                     final_epochs=1 if quick else 3, finalists=1 if quick else 2,
                     max_batches=60 if quick else 200, latency_repeats=30 if quick else 100,
                     families=("connection", "channel", "share", "int8", "lowbit", "distill"))
    result = auto(model, data, budget, out_dir=out_dir, config=cfg, model_spec=None,
                  data_spec="fashion-mnist", progress=progress)
    d = result.to_dict()
    d["report"] = str(Path(out_dir) / "report.html")
    return d
