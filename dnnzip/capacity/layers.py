"""Width-sliceable layers for nested multi-capacity models (NestDNN [73]).

Each layer holds the full weights of the largest capacity. ``widths[i]`` is its number of output
units at capacity ``i`` (filters are stored most important first, so a capacity uses a prefix);
the input width is read from the incoming tensor, so layers compose without knowing their
neighbours (after ``Flatten`` of a (C, H, W) map the first k channels are the first k*H*W
features, so a Linear slices its input columns the same way). The active capacity is the
persistent buffer ``active``, so it travels in the artifact's state_dict.

BatchNorm keeps separate running statistics per capacity (switchable BN, Yu et al. 2019,
"Slimmable Neural Networks"): a prefix of channels sees different input statistics at each
width, and shared statistics degrade the small capacities. Affine parameters are shared.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dnnzip.nn.spec import spec_module


class _Nested(nn.Module):
    widths: list[int]
    used_params: int = 0  # parameters the last forward touched (for cost reports)

    def _init_nest(self, widths) -> None:
        self.widths = [int(w) for w in widths]
        self.register_buffer("active", torch.tensor(len(self.widths) - 1, dtype=torch.int64))

    @property
    def out_width(self) -> int:
        return self.widths[int(self.active)]


class _NestConv(_Nested):
    _fn = staticmethod(F.conv2d)
    _dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, widths=None):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        tup = (lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * self._dims)
        self.kernel_size, self.stride = tup(kernel_size), tup(stride)
        self.padding, self.dilation = tup(padding), tup(dilation)
        if groups not in (1, in_channels) or (groups > 1 and in_channels != out_channels):
            raise ValueError("nested convs support groups=1 or depthwise (groups=in=out)")
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels // groups,
                                               *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._init_nest(widths or [out_channels])

    def spec_kwargs(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), dilation=list(self.dilation), groups=self.groups,
                    bias=self.bias is not None, widths=list(self.widths))

    def forward(self, x):
        c = x.shape[1]
        if self.groups > 1:  # depthwise: as many filters as incoming channels
            w, b, g = self.weight[:c], self.bias, c
            b = b[:c] if b is not None else None
        else:
            k = self.out_width
            w, g = self.weight[:k, :c], 1
            b = self.bias[:k] if self.bias is not None else None
        self.used_params = w.numel() + (b.numel() if b is not None else 0)
        return self._fn(x, w, b, self.stride, self.padding, self.dilation, g)


@spec_module("capacity.NestConv2d")
class NestConv2d(_NestConv):
    _fn = staticmethod(F.conv2d)
    _dims = 2


@spec_module("capacity.NestConv1d")
class NestConv1d(_NestConv):
    _fn = staticmethod(F.conv1d)
    _dims = 1


@spec_module("capacity.NestLinear")
class NestLinear(_Nested):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, widths=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._init_nest(widths or [out_features])

    def spec_kwargs(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None, widths=list(self.widths))

    def forward(self, x):
        k = self.out_width
        b = self.bias[:k] if self.bias is not None else None
        w = self.weight[:k, :x.shape[-1]]
        self.used_params = w.numel() + (b.numel() if b is not None else 0)
        return F.linear(x, w, b)


class _NestBN(_Nested):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, widths=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        n = len(widths or [num_features])
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(n, num_features))
        self.register_buffer("running_var", torch.ones(n, num_features))
        self._init_nest(widths or [num_features])

    def spec_kwargs(self) -> dict:
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum,
                    affine=self.weight is not None, widths=list(self.widths))

    def forward(self, x):
        c, i = x.shape[1], int(self.active)
        self.used_params = 2 * c if self.weight is not None else 0
        w = self.weight[:c] if self.weight is not None else None
        b = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, self.running_mean[i, :c], self.running_var[i, :c], w, b,
                            self.training, self.momentum, self.eps)


@spec_module("capacity.NestBatchNorm2d")
class NestBatchNorm2d(_NestBN):
    pass


@spec_module("capacity.NestBatchNorm1d")
class NestBatchNorm1d(_NestBN):
    pass


NESTED = (NestConv1d, NestConv2d, NestLinear, NestBatchNorm1d, NestBatchNorm2d)


def nested_from(m: nn.Module, widths: list[int]) -> _Nested:
    """The nested twin of a Conv/Linear/BN ``m`` with its weights (all capacities' stats
    start from ``m``'s running statistics)."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        cls = NestConv2d if isinstance(m, nn.Conv2d) else NestConv1d
        new = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                  m.groups, m.bias is not None, widths)
    elif isinstance(m, nn.Linear):
        new = NestLinear(m.in_features, m.out_features, m.bias is not None, widths)
    else:
        cls = NestBatchNorm2d if isinstance(m, nn.BatchNorm2d) else NestBatchNorm1d
        new = cls(m.num_features, m.eps, m.momentum if m.momentum is not None else 0.1,
                  m.affine, widths)
    with torch.no_grad():
        if getattr(m, "weight", None) is not None:
            new.weight.copy_(m.weight)
        if getattr(m, "bias", None) is not None:
            new.bias.copy_(m.bias)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            new.running_mean.copy_(m.running_mean.expand_as(new.running_mean))
            new.running_var.copy_(m.running_var.expand_as(new.running_var))
    return new.train(m.training)
