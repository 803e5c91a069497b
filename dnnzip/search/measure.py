"""Measure one candidate the way the budget is stated: bytes of its written file, latency on the
budget's runtime, estimated energy, and the metric after reloading that file."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from dnnzip.search.objective import Point


@dataclass(frozen=True)
class Measurement:
    bytes: int
    latency_ms: float
    energy_mj: float
    accuracy: float
    test_accuracy: float | None
    runtime: str
    latency_note: str = ""

    def point(self) -> Point:
        return Point(self.bytes, self.latency_ms, self.energy_mj, self.accuracy)

    def to_dict(self) -> dict:
        return asdict(self)


def measure_artifact(path: str | os.PathLike, data, *, runtime: str, repeats: int = 50,
                     split: str = "val", with_test: bool = False) -> Measurement:
    """Reload ``path`` and measure it. Search selects on ``val``; the test split is touched only
    for the final report (``with_test``)."""
    from dnnzip.artifact import unpack
    from dnnzip.evaluation import evaluate_on
    from dnnzip.profile import profile

    model = unpack(path)
    nbytes = Path(path).stat().st_size
    note = ""
    try:
        prof = profile(model, None, runtimes=(runtime,), batch_size=1, threads=1,
                       repeats=repeats, example=data.example_input(1))
        latency = prof.latency_p50(runtime)
    except Exception as exc:  # noqa: BLE001 - e.g. an op ONNX cannot export
        from dnnzip.errors import DnnzipError
        if runtime == "torch" or not isinstance(exc, DnnzipError):
            raise
        prof = profile(model, None, runtimes=("torch",), batch_size=1, threads=1,
                       repeats=repeats, example=data.example_input(1))
        latency = prof.latency_p50("torch")
        note = f"{runtime} failed ({exc}); latency measured on torch"
    acc = evaluate_on(model, data, split=split, runtime="torch")
    test = evaluate_on(model, data, split="test", runtime="torch") if with_test else None
    return Measurement(nbytes, latency, prof.energy_mj(), acc, test, runtime, note)


def model_and_measure(model: nn.Module, path: str | os.PathLike, data, **kw) -> Measurement:
    from dnnzip.artifact import pack
    pack(model, path)
    return measure_artifact(path, data, **kw)
