"""Sparse representation: weight sharing (Deep Compression), EIE inference, multiplexing."""
from dnnzip.share import kmeans, multiplex  # noqa: F401  (register techniques)
from dnnzip.share.kmeans import KMeansShareConfig, kmeans_1d

__all__ = ["KMeansShareConfig", "kmeans_1d"]
