"""Bits precision (survey Sec. V): int8 affine (Jacob et al.), k-bit linear/log (QNN), binary
(BNN / XNOR-Net), mixed precision. Importing this package registers the techniques."""
from dnnzip.quant import binary, int8, lowbit, mixed  # noqa: F401  (registers techniques)
