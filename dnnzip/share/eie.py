"""EIE-style inference on the compressed representation of Linear layers (Han et al. 2016 [37]).

EIE stores a pruned, weight-shared fully connected layer column by column (CSC): for each input
neuron j, the non-zero rows as *relative* row indices (4-bit in the paper) and a 4-bit codebook
index per entry; weights are decoded through the codebook only when used. It also skips zero
activations: only columns whose input is non-zero are visited (ReLU makes most inputs zero).

``EIELinear`` keeps exactly that representation in numpy arrays (absolute row indices instead of
4-bit relative ones with padding zeros — the same work) and computes
``y = b + Σ_{j: x_j ≠ 0} x_j · codebook[idx[col j]]`` scattered into the rows. Two backends
run it: ``"c"``, the column walk of EIE's processing elements as a compiled loop
(``dnnzip/kernels/eie.c``, float32 accumulation; for batches of 4 or more, one decoded weight
updates all samples in one vector loop, a column skipped when zero for every sample), and ``"numpy"``, the same walk vectorised
(float64 accumulation through ``bincount``); ``"auto"`` (default) takes C when a compiler is
available. Deviation: one CPU thread walks all rows; EIE splits the rows over 64 PEs.
``memory_bytes`` reports what the representation occupies at the paper's widths.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dnnzip import kernels
from dnnzip.errors import ConfigError, UnsupportedLayerError

BACKENDS = ("auto", "c", "numpy")


@dataclass
class EIELinear:
    """A Linear layer as (column pointers, row indices, codebook indices, codebook, bias)."""

    in_features: int
    out_features: int
    col_ptr: np.ndarray   # int64 [in_features + 1]
    rows: np.ndarray      # int32 [nnz]
    codes: np.ndarray     # uint8/uint16 [nnz]
    codebook: np.ndarray  # float32 [k]
    bias: np.ndarray | None

    @classmethod
    def from_linear(cls, layer: nn.Module, *, max_codebook: int = 65536) -> "EIELinear":
        if not isinstance(layer, nn.Linear):
            raise UnsupportedLayerError(f"EIE runs Linear layers only, got {type(layer).__name__}")
        w = layer.weight.detach().float().numpy()
        mask = getattr(layer, "weight_mask", None)
        if isinstance(mask, torch.Tensor):
            w = w * mask.numpy()
        wt = np.ascontiguousarray(w.T)  # column j of W is row j of W^T
        nz_cols, nz_rows = np.nonzero(wt)
        values = wt[nz_cols, nz_rows]
        codebook, codes = np.unique(values, return_inverse=True)
        if len(codebook) > max_codebook:
            raise ConfigError(f"layer has {len(codebook)} distinct weights; EIE needs shared "
                              "weights — run share.kmeans first")
        col_ptr = np.zeros(layer.in_features + 1, dtype=np.int64)
        np.add.at(col_ptr, nz_cols + 1, 1)
        col_ptr = np.cumsum(col_ptr)
        bias = None if layer.bias is None else layer.bias.detach().float().numpy().copy()
        return cls(layer.in_features, layer.out_features, col_ptr, nz_rows.astype(np.int32),
                   codes.astype(np.uint8 if len(codebook) <= 256 else np.uint16),
                   codebook.astype(np.float32), bias)

    @property
    def nnz(self) -> int:
        return len(self.rows)

    def memory_bytes(self, *, index_bits: int = 4, code_bits: int | None = None) -> int:
        """Bytes at EIE's widths: 4-bit relative row index + b-bit code per entry (+ padding
        entries when a run of zeros exceeds 2^index_bits), column pointers, codebook, bias."""
        code_bits = code_bits or max(1, int(np.ceil(np.log2(max(2, len(self.codebook))))))
        pad = 0
        limit = 1 << index_bits
        for j in range(self.in_features):
            r = self.rows[self.col_ptr[j]:self.col_ptr[j + 1]]
            gaps = np.diff(r, prepend=-1)
            pad += int(((gaps - 1) // limit).sum())
        entries = self.nnz + pad
        return (entries * (index_bits + code_bits) + 7) // 8 + 4 * (self.in_features + 1) + \
            4 * len(self.codebook) + (0 if self.bias is None else 4 * self.out_features)

    def __call__(self, x: np.ndarray, *, backend: str = "auto") -> np.ndarray:
        if backend not in BACKENDS:
            raise ConfigError(f"The 'backend' parameter of EIELinear must be one of "
                              f"{', '.join(map(repr, BACKENDS))}. Got {backend!r} instead.")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ConfigError(f"EIELinear expects input (N, {self.in_features}), got {x.shape}")
        if backend != "numpy":
            lib = kernels.load("eie")
            if lib is not None:
                return self._c(lib, x)
            if backend == "c":
                raise ConfigError(f"the EIE C kernel is unavailable ({kernels.why('eie')}); "
                                  "install a C compiler or use backend='numpy'")
        return self._numpy(x)

    def _checked(self, lib) -> tuple:
        """(kernel, pointers to its arrays) for the C kernel, checked once (it trusts every
        index) and cached while the arrays stay the same objects."""
        c = getattr(self, "_c_arrays", None)
        if c is not None and c[0] is self.col_ptr and c[1] is self.rows and c[2] is self.codes \
                and c[3] is self.codebook and c[4] is self.bias and c[5] is lib:
            return c[6]
        col_ptr = np.ascontiguousarray(self.col_ptr, dtype=np.int64)
        rows = np.ascontiguousarray(self.rows, dtype=np.int32)
        wide = len(self.codebook) > 256 or self.codes.dtype.itemsize > 1
        codes = np.ascontiguousarray(self.codes, dtype=np.uint16 if wide else np.uint8)
        codebook = np.ascontiguousarray(self.codebook, dtype=np.float32)
        bias = None if self.bias is None else np.ascontiguousarray(self.bias, dtype=np.float32)
        nnz = len(rows)
        if len(col_ptr) != self.in_features + 1 or col_ptr[0] != 0 or col_ptr[-1] != nnz \
                or (np.diff(col_ptr) < 0).any() or len(codes) != nnz \
                or (nnz and (rows.min() < 0 or rows.max() >= self.out_features
                             or int(codes.max()) >= len(codebook))) \
                or (bias is not None and len(bias) != self.out_features):
            raise ConfigError("EIELinear arrays are inconsistent (column pointers, row or code "
                              "indices out of range); build it with EIELinear.from_linear")
        fn = lib.dz_eie_u16 if wide else lib.dz_eie_u8
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64] + \
            [ctypes.c_void_p] * 6
        fn.restype = ctypes.c_int
        keep = (col_ptr, rows, codes, codebook, bias)  # the pointers below point into these
        ptrs = tuple(None if a is None else a.ctypes.data for a in keep)
        self._c_arrays = (self.col_ptr, self.rows, self.codes, self.codebook, self.bias, lib,
                          (fn, ptrs, keep))
        return self._c_arrays[6]

    def _c(self, lib, x: np.ndarray) -> np.ndarray:
        fn, ptrs, _ = self._checked(lib)
        x = np.ascontiguousarray(x)
        out = np.empty((x.shape[0], self.out_features), dtype=np.float32)
        if fn(x.ctypes.data, x.shape[0], self.in_features, self.out_features, *ptrs,
              out.ctypes.data):
            raise MemoryError("EIE kernel could not allocate its batch buffers")
        return out

    def _numpy(self, x: np.ndarray) -> np.ndarray:
        n_in, n_out = x.shape[0], self.out_features
        sample, col = np.nonzero(x)  # skip zero activations: only these columns are visited
        starts, ends = self.col_ptr[col], self.col_ptr[col + 1]
        counts = ends - starts
        total = int(counts.sum())
        # the entries of every visited column, back to back (vectorised CSC column walk)
        sel = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
        contrib = self.codebook[self.codes[sel]] * np.repeat(x[sample, col], counts)  # decode
        target = np.repeat(sample, counts) * n_out + self.rows[sel]
        out = np.bincount(target, weights=contrib, minlength=n_in * n_out)
        out = out.reshape(n_in, n_out).astype(np.float32)
        if self.bias is not None:
            out += self.bias
        return out


def eie_forward_mlp(model: nn.Module, x: torch.Tensor, *, backend: str = "auto") -> np.ndarray:
    """Run a model made of Flatten/Linear/ReLU children (e.g. LeNet-300-100) through EIE layers."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise UnsupportedLayerError("eie_forward_mlp needs a model of Linear layers")
    h = x.flatten(1).numpy()
    for i, layer in enumerate(layers):
        h = EIELinear.from_linear(layer)(h, backend=backend)
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h
