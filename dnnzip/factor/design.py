"""Architecture redesign as transforms of an existing model.

- ``design.depthwise`` (MobileNets, Howard et al. [29]): every standard k x k convolution
  (groups=1, in > 1, k > 1) becomes ``dw k x k -> BN -> ReLU -> pw 1x1``. Initialisation is the
  least-squares fit of the original kernel: per input channel i the O x k^2 slice W[:, i] is
  replaced by its best rank-1 approximation p_i d_i^T (SVD), giving the depthwise filter d_i and
  the pointwise column p_i. The BN is set, from calibration activations, to add a per-channel
  shift c that keeps the ReLU in its linear region (c is subtracted again in the pointwise bias),
  so the new block starts as exactly that least-squares approximation on the calibration data.
  Accuracy is then recovered by distillation from the original (Hinton KD). Width multiplier
  ``width`` < 1 thins every pointwise output by L1 channel pruning (torch-pruning); resolution
  multiplier ``resolution`` < 1 prepends a ``factor.Resize``.
- ``design.group_shuffle`` (ShuffleNet [81], VarGNet [28]): standard convs become group convs
  followed by a channel shuffle (``zoo.ChannelShuffle``). ``groups`` fixes the group count
  (ShuffleNet); ``channels_per_group`` > 0 fixes the channels per group instead, so the group
  count varies per layer (VarGNet's variable group convolution). Weights start from the
  original's block-diagonal part (the kept connections), then KD recovers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dnnzip.config import check_choice, check_range, coerce_tuple
from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.factor._common import recover, set_module, targets
from dnnzip.nn.spec import spec_module
from dnnzip.registry import Context, fresh_copy, technique
from dnnzip.zoo.shufflenet import ChannelShuffle  # one class for zoo and redesigned models


@spec_module("factor.Resize")
class Resize(nn.Module):
    """Bilinear/linear rescaling of the input by ``scale`` (MobileNet resolution multiplier)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)

    def spec_kwargs(self) -> dict:
        return {"scale": self.scale}

    def forward(self, x):
        mode = "linear" if x.dim() == 3 else "bilinear"
        return nn.functional.interpolate(x, scale_factor=self.scale, mode=mode,
                                         align_corners=False)


# ----------------------------------------------------------------------------- depthwise


@dataclass(frozen=True)
class DepthwiseConfig:
    """MobileNet depthwise-separable redesign ([29]).

    width: width multiplier alpha in (0, 1]; < 1 removes (1 - alpha) of each pointwise conv's
        output channels (L1 criterion) -- the classifier's outputs are never touched, nor a
        pointwise conv feeding a depthwise conv with multiplier > 1.
    resolution: resolution multiplier rho in (0, 1]; < 1 rescales the input first.
    multiplier: depthwise channel multiplier (filters per input channel); each extra filter
        keeps one more singular component of every input channel's kernel slice in the LS init.
    distill: recover by KD from the original (``ctx.teacher`` or the input model); else CE.
    temperature / alpha: KD settings (survey Eq. 21).
    ignore: module names / ``re:`` patterns left as standard convs.
    """

    width: float = 1.0
    resolution: float = 1.0
    multiplier: int = 1
    distill: bool = True
    temperature: float = 4.0
    alpha: float = 0.9
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "width", 0.0, 1.0, left_open=True)
        check_range(self, "resolution", 0.0, 1.0, left_open=True)
        check_range(self, "multiplier", 1, 64, integer=True)
        check_range(self, "temperature", 0.0, left_open=True)
        check_range(self, "alpha", 0.0, 1.0)
        coerce_tuple(self, "ignore")


_CONVS = (nn.Conv1d, nn.Conv2d)


def _standard_convs(model: nn.Module, ignore: tuple[str, ...]) -> list[tuple[str, nn.Module]]:
    return [(n, c) for n, c in targets(model, _CONVS, ignore)
            if c.groups == 1 and c.in_channels > 1 and math.prod(c.kernel_size) > 1
            and not isinstance(c.padding, str)]


def _no_conv_error(model: nn.Module, what: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"{type(model).__name__} has no standard convolution (Conv1d/Conv2d, groups=1, "
        f"in_channels > 1, kernel > 1) to {what}; use factor.svd for Linear/GRU/LSTM layers.")


def _capture_inputs(model: nn.Module, names: list[str], x: torch.Tensor | None) -> dict:
    if x is None:
        return {}
    got, hooks = {}, []
    mods = dict(model.named_modules())
    for n in names:
        hooks.append(mods[n].register_forward_hook(
            lambda m, inp, out, n=n: got.__setitem__(n, inp[0].detach())))
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return got


def depthwise_block(conv: nn.Module, calib: torch.Tensor | None = None, *,
                    multiplier: int = 1) -> nn.Sequential:
    """``dw k x k (x multiplier) -> BN -> ReLU -> pw 1x1`` initialised by the per-channel
    rank-``multiplier`` LS fit (MobileNet's depth multiplier; 1 = plain depthwise)."""
    cls, bn_cls = type(conv), (nn.BatchNorm1d if isinstance(conv, nn.Conv1d) else nn.BatchNorm2d)
    I, O, m = conv.in_channels, conv.out_channels, multiplier
    dw = cls(I, I * m, conv.kernel_size, stride=conv.stride, padding=conv.padding,
             dilation=conv.dilation, groups=I, bias=False, padding_mode=conv.padding_mode)
    bn, pw = bn_cls(I * m), cls(I * m, O, 1, bias=True)
    W = conv.weight.detach().double()
    I = I * m  # channels between dw and pw, from here on
    with torch.no_grad():
        for i in range(conv.in_channels):
            U, S, Vh = torch.linalg.svd(W[:, i].reshape(O, -1), full_matrices=False)
            for r in range(min(m, len(S))):
                root = S[r].sqrt()
                dw.weight[i * m + r, 0] = (root * Vh[r]).reshape(conv.kernel_size).float()
                pw.weight[:, i * m + r].view(-1).copy_((root * U[:, r]).float())
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(O)
        if calib is not None:
            z = dw(calib).transpose(0, 1).reshape(I, -1)
            mean, var = z.mean(1), z.var(1, unbiased=False)
            shift = (-z.min(1).values).clamp_min(0) + 1e-3  # keeps ReLU input > 0
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_((var + bn.eps).sqrt())
            bn.bias.copy_(mean + shift)
            bias -= pw.weight.flatten(1) @ shift  # BN(z) = z + shift in eval mode
        pw.bias.copy_(bias)
    return nn.Sequential(dw, bn, nn.ReLU(), pw)


def _example(ctx: Context) -> torch.Tensor | None:
    try:
        return ctx.example()
    except ConfigError:
        return None


def _thin(model: nn.Module, width: float, x: torch.Tensor, pointwise: list[nn.Module]) -> None:
    """Width multiplier: prune (1 - width) of each pointwise output (L1), in place."""
    import torch_pruning as tp

    ratios = {m: 1.0 - width for m in pointwise}
    keep = [m for m in model.modules() if isinstance(m, (nn.Linear, *_CONVS)) and m not in ratios
            and not (isinstance(m, _CONVS) and m.groups == m.in_channels > 1)]  # dw follows pw
    keep += [m for m in model.modules() if isinstance(m, _CONVS) and 1 < m.groups
             and m.out_channels != m.in_channels]  # multiplier > 1: leave its width alone
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.0, pruning_ratio_dict=ratios,
                                       ignored_layers=keep)
    pruner.step()


@technique("design.depthwise", DepthwiseConfig)
def apply_depthwise(model: nn.Module, config: DepthwiseConfig, ctx: Context) -> nn.Module:
    """MobileNet redesign of ``model``; the input model is untouched."""
    original = model
    model = fresh_copy(model)
    convs = _standard_convs(model, config.ignore)
    if not convs:
        raise _no_conv_error(model, "replace by depthwise-separable blocks")
    x = _example(ctx)
    inputs = _capture_inputs(model, [n for n, _ in convs], x)
    pointwise = []
    for name, conv in convs:
        block = depthwise_block(conv, inputs.get(name), multiplier=config.multiplier)
        set_module(model, name, block)
        pointwise.append(block[3])
    if config.width < 1.0:
        if x is None:
            raise ConfigError("design.depthwise: width < 1 needs an example input "
                              "(ctx.example_input or ctx.data) to trace channel dependencies.")
        _thin(model, config.width, x, pointwise)
    if config.resolution < 1.0:
        model = nn.Sequential(Resize(config.resolution), model)
        if x is not None:
            _check_runs(model, x, "resolution")
    teacher = (ctx.teacher or original) if config.distill else None
    recover(model, ctx, teacher=teacher, temperature=config.temperature, alpha=config.alpha)
    return model.train(original.training)


def _check_runs(model: nn.Module, x: torch.Tensor, option: str) -> None:
    try:
        with torch.no_grad():
            model.eval()(x)
    except RuntimeError as exc:
        raise ConfigError(
            f"design.depthwise: the model does not accept inputs rescaled by {option}= "
            f"(a Flatten+Linear head fixes the input size): {exc}. Use {option}=1.0 or a model "
            "with global pooling.") from exc


# ----------------------------------------------------------------------------- group shuffle


@dataclass(frozen=True)
class GroupShuffleConfig:
    """ShuffleNet pointwise group conv + channel shuffle ([81]); VarGNet variable groups ([28]).

    groups: group count g (ShuffleNet uses 2-8); a conv whose channels g does not divide is
        left alone.
    channels_per_group: if > 0, groups = in_channels // channels_per_group per layer (VarGNet).
    kernels: ``pointwise`` (only 1x1 convs, ShuffleNet's choice) or ``all`` standard convs.
    distill / temperature / alpha / ignore: as in DepthwiseConfig.
    """

    groups: int = 2
    channels_per_group: int = 0
    kernels: str = "all"
    distill: bool = True
    temperature: float = 4.0
    alpha: float = 0.9
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check_range(self, "groups", 2, integer=True)
        check_range(self, "channels_per_group", 0, integer=True)
        check_choice(self, "kernels", ("pointwise", "all"))
        check_range(self, "temperature", 0.0, left_open=True)
        check_range(self, "alpha", 0.0, 1.0)
        coerce_tuple(self, "ignore")


def shuffled_group_conv(conv: nn.Conv2d, groups: int) -> nn.Sequential:
    """``Conv2d(groups=g) -> ChannelShuffle(g)``; output q of the pair keeps the original
    weights W[q, inputs of group q % g] so it approximates the original's output q."""
    I, O = conv.in_channels, conv.out_channels
    new = nn.Conv2d(I, O, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode)
    ig, og = I // groups, O // groups
    with torch.no_grad():
        for p in range(O):
            gi, k = divmod(p, og)
            q = k * groups + gi  # where the shuffle sends p
            new.weight[p] = conv.weight[q, gi * ig:(gi + 1) * ig]
            if conv.bias is not None:
                new.bias[p] = conv.bias[q]
    return nn.Sequential(new, ChannelShuffle(groups))


def _groups_for(conv: nn.Module, config: GroupShuffleConfig) -> int:
    g = (conv.in_channels // config.channels_per_group if config.channels_per_group
         else config.groups)
    ok = g >= 2 and conv.in_channels % g == 0 and conv.out_channels % g == 0
    return g if ok else 0


@technique("design.group_shuffle", GroupShuffleConfig)
def apply_group_shuffle(model: nn.Module, config: GroupShuffleConfig, ctx: Context) -> nn.Module:
    """Group-conv + channel-shuffle redesign of ``model``; the input model is untouched."""
    original = model
    model = fresh_copy(model)
    convs = [(n, c) for n, c in _standard_convs(model, config.ignore) if isinstance(c, nn.Conv2d)]
    if config.kernels == "pointwise":
        convs = [(n, c) for n, c in targets(model, (nn.Conv2d,), config.ignore)
                 if c.groups == 1 and c.kernel_size == (1, 1)]
    if not convs:
        raise _no_conv_error(model, "turn into group convolutions")
    done = 0
    for name, conv in convs:
        g = _groups_for(conv, config)
        if g:
            set_module(model, name, shuffled_group_conv(conv, g))
            done += 1
    if not done:
        raise UnsupportedLayerError(
            f"design.group_shuffle: no convolution of {type(model).__name__} has channel counts "
            f"divisible by the group count "
            f"({[(n, c.in_channels, c.out_channels) for n, c in convs]}"
            "); choose groups= that divides them or set channels_per_group=.")
    teacher = (ctx.teacher or original) if config.distill else None
    recover(model, ctx, teacher=teacher, temperature=config.temperature, alpha=config.alpha)
    return model.train(original.training)
