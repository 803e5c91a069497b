"""Low-rank convolutions (survey Sec. III-B: Denton et al. / [34] low-rank filter approximation,
then fine-tuning; SparseSep [31]).

Methods (all data-free decompositions, optionally recovered by fine-tuning through ``ctx``):

- ``tucker2``: HOSVD of the kernel W (O x I x k...) on its output and input modes (Kim et al.
  2016 "Tucker-2"): W ~ core x_0 U_out x_1 U_in, giving ``1x1 (I->R_in)``, ``k x k core
  (R_in->R_out)`` with the original stride/padding, ``1x1 (R_out->O)`` + bias. ``iters`` > 0 runs
  that many HOOI sweeps after the HOSVD (lower reconstruction error, same shapes). Conv1d/2d.
- ``separable``: Jaderberg/Denton-style spatial separation: the matrix W[(i, y), (o, x)] is
  truncated by SVD to rank R: a vertical ``k x 1`` conv (I->R) then a horizontal ``1 x k`` conv
  (R->O). Conv2d with k > 1 only.
- ``sparsesep`` (SparseSep [31]): convolutions separated as in ``separable`` and fully connected
  layers replaced by SVD factors whose larger factor is made sparse (magnitude, keeping
  ``fc_density``), the other factor refitted by least squares. Deviation: SparseSep learns a
  sparse dictionary (K-SVD style); we use SVD + magnitude sparsity + least squares, which needs
  no iterative dictionary learning and keeps every layer a standard module.

numpy/torch SVD only; tensorly is not needed.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_range, coerce_enum, coerce_tuple
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.factor._common import matches, recover, set_module
from dnnzip.factor.svd import rank_for_energy, svd_factors
from dnnzip.registry import Context, fresh_copy, technique

__all__ = ["ConvMethod", "ConvFactorConfig", "tucker2", "hosvd_factors", "separable",
           "sparse_linear", "apply_conv"]


class ConvMethod(str, enum.Enum):
    TUCKER2 = "tucker2"
    SEPARABLE = "separable"
    SPARSESEP = "sparsesep"


def _mode_basis(W: torch.Tensor, mode: int, rank: int) -> torch.Tensor:
    unfolded = W.movedim(mode, 0).reshape(W.shape[mode], -1)
    U, _, _ = torch.linalg.svd(unfolded, full_matrices=False)
    return U[:, :rank]


def _mode_svals(W: torch.Tensor, mode: int) -> torch.Tensor:
    return torch.linalg.svdvals(W.movedim(mode, 0).reshape(W.shape[mode], -1).double())


def _project(W: torch.Tensor, U_out: torch.Tensor, U_in: torch.Tensor) -> torch.Tensor:
    """core = W x_0 U_out^T x_1 U_in^T."""
    return torch.einsum("oi...,or,is->rs...", W, U_out, U_in)


def hosvd_factors(W: torch.Tensor, r_out: int, r_in: int, *, iters: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 of a conv kernel: (U_out (O x r_out), core (r_out x r_in x k...), U_in (I x r_in)).

    HOSVD, then ``iters`` HOOI sweeps (alternating leading singular vectors of the kernel
    projected on the other mode)."""
    Wd = W.detach().double()
    U_out, U_in = _mode_basis(Wd, 0, r_out), _mode_basis(Wd, 1, r_in)
    for _ in range(iters):
        U_out = _mode_basis(torch.einsum("oi...,is->os...", Wd, U_in), 0, r_out)
        U_in = _mode_basis(torch.einsum("oi...,or->ri...", Wd, U_out), 1, r_in)
    core = _project(Wd, U_out, U_in)
    return U_out.to(W.dtype), core.to(W.dtype), U_in.to(W.dtype)


def _conv_like(conv: nn.Module, cin: int, cout: int, kernel, *, stride=1, padding=0,
               dilation=1, bias: bool = False) -> nn.Module:
    cls = type(conv)
    return cls(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias,
               padding_mode=conv.padding_mode)


def tucker2(conv: nn.Module, r_out: int, r_in: int, *, iters: int = 0) -> nn.Sequential:
    """Conv -> Sequential(1x1 I->r_in, core r_in->r_out, 1x1 r_out->O).

    A mode kept at full rank needs no 1x1 conv: its orthogonal factor is folded into the core
    (Tucker-1), so e.g. a first layer with one input channel becomes (core, 1x1)."""
    O, I = conv.out_channels, conv.in_channels
    U_out, core, U_in = hosvd_factors(conv.weight, r_out, r_in, iters=iters)
    if r_in == I:
        core = torch.einsum("rs...,is->ri...", core, U_in)
    if r_out == O:
        core = torch.einsum("rs...,or->os...", core, U_out)
    ones = (1,) * (conv.weight.dim() - 2)
    layers = []
    if r_in < I:
        first = _conv_like(conv, I, r_in, ones)
        first.padding_mode = "zeros"
        first.weight.data.copy_(U_in.t().reshape(first.weight.shape))
        layers.append(first)
    has_last = r_out < O
    mid = _conv_like(conv, core.shape[1], core.shape[0], conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation,
                     bias=conv.bias is not None and not has_last)
    mid.weight.data.copy_(core)
    layers.append(mid)
    if has_last:
        last = _conv_like(conv, r_out, O, ones, bias=conv.bias is not None)
        last.padding_mode = "zeros"
        last.weight.data.copy_(U_out.reshape(last.weight.shape))
        layers.append(last)
    if conv.bias is not None:
        layers[-1].bias.data.copy_(conv.bias.detach())
    return nn.Sequential(*layers)


def _sep_matrix(W: torch.Tensor) -> torch.Tensor:
    O, I, kh, kw = W.shape
    return W.permute(1, 2, 0, 3).reshape(I * kh, O * kw)


def separable(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """Conv2d k_h x k_w -> Sequential(Conv k_h x 1 (I->R), Conv 1 x k_w (R->O)) via SVD."""
    O, I, kh, kw = conv.weight.shape
    A, B = svd_factors(_sep_matrix(conv.weight), rank, where="separable kernel")
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    ph, pw = conv.padding if not isinstance(conv.padding, str) else (0, 0)
    vert = nn.Conv2d(I, rank, (kh, 1), stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1),
                     bias=False)
    horiz = nn.Conv2d(rank, O, (1, kw), stride=(1, sw), padding=(0, pw), dilation=(1, dw),
                      bias=conv.bias is not None)
    with torch.no_grad():
        vert.weight.copy_(A.reshape(I, kh, rank).permute(2, 0, 1).unsqueeze(-1))
        horiz.weight.copy_(B.reshape(rank, O, kw).permute(1, 0, 2).unsqueeze(2))
        if conv.bias is not None:
            horiz.bias.copy_(conv.bias)
    return nn.Sequential(vert, horiz)


def sparse_linear(layer: nn.Linear, rank: int, density: float) -> nn.Sequential:
    """SparseSep FC: W ~ A S, S (rank x in) sparse at ``density``, A refitted by least squares."""
    A, S = svd_factors(layer.weight, rank, where="sparsesep linear")
    keep = max(1, int(round(density * S.numel())))
    thresh = S.abs().flatten().kthvalue(S.numel() - keep + 1).values
    S = torch.where(S.abs() >= thresh, S, torch.zeros_like(S))
    A = torch.linalg.lstsq(S.t().double(), layer.weight.detach().t().double()).solution.t().float()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(S)
        second.weight.copy_(A)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


@dataclass(frozen=True)
class ConvFactorConfig:
    """Low-rank convolution (Denton / Tucker-2 / SparseSep; survey Sec. III-B, [31], [34]).

    method: ``tucker2``, ``separable`` or ``sparsesep``.
    energy: fraction of squared singular values kept per mode (rank selection).
    ratio: if > 0, ranks are instead ``ceil(ratio * channels)`` (tucker2) or the largest rank
        with at most ``ratio`` of the layer's parameters (separable / sparsesep).
    iters: HOOI sweeps after the HOSVD (tucker2).
    fc_density: kept fraction of the sparse FC factor (sparsesep).
    min_gain: a layer is replaced only if its parameter count shrinks by at least this factor.
    layers: only these module names / ``re:`` patterns (each must be a conv; empty = all convs).
    ignore: names / ``re:`` patterns left untouched.
    finetune / distill: recover with ``ctx.epochs`` of training (KD from the original).
    """

    method: ConvMethod = ConvMethod.TUCKER2
    energy: float = 0.9
    ratio: float = 0.0
    iters: int = 0
    fc_density: float = 0.3
    min_gain: float = 1.1
    layers: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    finetune: bool = False
    distill: bool = False

    def __post_init__(self):
        coerce_enum(self, "method", ConvMethod)
        check_range(self, "energy", 0.0, 1.0, left_open=True)
        check_range(self, "ratio", 0.0, 1.0)
        check_range(self, "iters", 0, 50, integer=True)
        check_range(self, "fc_density", 0.0, 1.0, left_open=True)
        check_range(self, "min_gain", 1.0)
        coerce_tuple(self, "layers")
        coerce_tuple(self, "ignore")


_CONVS = (nn.Conv1d, nn.Conv2d)


def _selected(model: nn.Module, config: ConvFactorConfig) -> list[tuple[str, nn.Module]]:
    mods = dict(model.named_modules())
    if config.layers:
        named = [(n, m) for n, m in mods.items() if n and matches(n, config.layers)]
        if not named:
            raise ConfigError(f"factor.conv: layers={list(config.layers)} match no module of "
                              f"{type(model).__name__}; names look like {list(mods)[1:6]}.")
        for n, m in named:
            if type(m) not in _CONVS:
                raise UnsupportedLayerError(
                    f"'{n}' ({type(m).__name__}) is not a convolution; factor.conv handles Conv1d/"
                    "Conv2d only. Use factor.svd for Linear/GRU/LSTM or drop it from layers=.")
        return [(n, m) for n, m in named if not matches(n, config.ignore)]
    found = [(n, m) for n, m in mods.items()
             if n and type(m) in _CONVS and not matches(n, config.ignore)]
    if not found:
        raise UnsupportedLayerError(
            f"{type(model).__name__} has no Conv1d/Conv2d layer; factor.conv needs one. "
            "Use factor.svd for Linear/GRU/LSTM layers.")
    return found


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _factor_one(conv: nn.Module, config: ConvFactorConfig) -> nn.Module | None:
    """The replacement for ``conv``, or None when it cannot be made smaller."""
    if conv.groups != 1 or isinstance(conv.padding, str):
        return None
    W = conv.weight.detach()
    if config.method is ConvMethod.TUCKER2:
        if config.ratio > 0:
            r_out = max(1, math.ceil(config.ratio * W.shape[0]))
            r_in = max(1, math.ceil(config.ratio * W.shape[1]))
        else:
            r_out = rank_for_energy(_mode_svals(W, 0), config.energy)
            r_in = rank_for_energy(_mode_svals(W, 1), config.energy)
        r_out, r_in = min(r_out, W.shape[0]), min(r_in, W.shape[1])
        new = tucker2(conv, r_out, r_in, iters=config.iters)
    else:
        if W.dim() != 4 or min(W.shape[2:]) < 2:
            return None
        M = _sep_matrix(W)
        if config.ratio > 0:
            rank = max(1, int(config.ratio * W.numel() // (M.shape[0] + M.shape[1])))
        else:
            rank = rank_for_energy(torch.linalg.svdvals(M.double()), config.energy)
        new = separable(conv, min(rank, min(M.shape)))
    return new if _params(new) * config.min_gain <= _params(conv) else None


@technique("factor.conv", ConvFactorConfig)
def apply_conv(model: nn.Module, config: ConvFactorConfig, ctx: Context) -> nn.Module:
    """Replace convolutions by low-rank sequences of standard convs; the input is untouched.

    Records ``model._dnnzip_factor[name] = {"method", "params_before", "params_after"}``.
    """
    original = model
    model = fresh_copy(model)
    report = {}
    for name, conv in _selected(model, config):
        new = _factor_one(conv, config)
        if new is not None:
            set_module(model, name, new)
            report[name] = {"method": config.method.value, "params_before": _params(conv),
                            "params_after": _params(new)}
    if config.method is ConvMethod.SPARSESEP:
        for name, lin in [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]:
            if matches(name, config.ignore) or min(lin.weight.shape) < 4:
                continue
            rank = rank_for_energy(torch.linalg.svdvals(lin.weight.detach().double()),
                                   config.energy)
            new = sparse_linear(lin, rank, config.fc_density)
            nnz = sum(int((p != 0).sum()) for p in new.parameters())
            if nnz * config.min_gain <= _params(lin):
                set_module(model, name, new)
                report[name] = {"method": "sparsesep-fc", "params_before": _params(lin),
                                "params_after": nnz}
    if config.finetune:
        recover(model, ctx, teacher=(ctx.teacher or original) if config.distill else None)
    model._dnnzip_factor = report
    return model.train(original.training)
