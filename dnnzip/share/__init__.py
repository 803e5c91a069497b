"""Sparse representation: weight sharing (Deep Compression), EIE inference, multiplexing, and
cross-model sharing (MTZ zipping, shared backbones, multitask shared hidden layers).

``share.kmeans`` and ``share.multiplex`` are registered techniques. ``multitask`` and ``branch``
are Python API functions only: they take several models/tasks in and return a multi-head model,
which the single-model technique contract does not cover.
"""
from dnnzip.share import kmeans, multiplex  # noqa: F401  (register techniques)
from dnnzip.share.branch import branch_train
from dnnzip.share.eie import EIELinear, eie_forward_mlp
from dnnzip.share.kmeans import KMeansShareConfig, distinct_values, kmeans_1d
from dnnzip.share.multiplex import MultiplexConfig, Multiplexer, multiplex_report
from dnnzip.share.multitask import (MultiHead, auto_share, evaluate_tasks, mtz_merge,
                                    shared_from_scratch, train_multitask)

__all__ = ["KMeansShareConfig", "kmeans_1d", "distinct_values", "EIELinear", "eie_forward_mlp",
           "MultiplexConfig", "Multiplexer", "multiplex_report", "MultiHead", "mtz_merge",
           "train_multitask", "shared_from_scratch", "auto_share", "evaluate_tasks",
           "branch_train"]
