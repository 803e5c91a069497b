"""A ShuffleNet-style net (Zhang et al. 2018, "ShuffleNet", Sec. 3.2, Fig. 2; survey: pointwise
group convolution and channel shuffle). Each unit: 1x1 group conv + BN + ReLU, channel shuffle,
3x3 depthwise conv (stride) + BN, 1x1 group conv + BN; stride 1 adds the input (then ReLU),
stride 2 concatenates a 3x3 average-pooled input (then ReLU).

Stage widths are the paper's Table 1 widths for the chosen ``groups`` divided by four (the
inputs are 28x28, not 224x224), rounded so every group conv divides evenly; the stem is a
stride-1 3x3 conv with 24 channels and no max-pool. As in the paper, the first unit's first 1x1
conv is not grouped (its input is too narrow).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import (ZooModule, check_choice, check_float, check_int, check_ints,
                                image_size, scaled)

# Paper Table 1 output widths of stages 2-4 per group count (divided by four below).
PAPER_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                4: (272, 544, 1088), 8: (384, 768, 1536)}


@spec_module("zoo.ChannelShuffle")
class ChannelShuffle(nn.Module):
    """Reshape (N, g*k, H, W) -> (N, g, k, H, W), transpose groups and k, flatten back."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def spec_kwargs(self) -> dict:
        return {"groups": self.groups}

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


@spec_module("zoo.ShuffleUnit")
class ShuffleUnit(ZooModule):
    """One ShuffleNet unit; ``concat`` (stride 2) when the shortcut is an average pool."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 3, stride: int = 1,
                 group_first: bool = True):
        super().__init__()
        self._record(in_channels=in_channels, out_channels=out_channels, groups=groups,
                     stride=stride, group_first=group_first)
        self.concat = stride != 1
        branch = out_channels - in_channels if self.concat else out_channels
        mid = scaled(out_channels // 4, 1.0, multiple=groups)
        self.pw1 = nn.Conv2d(in_channels, mid, 1, groups=groups if group_first else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.shuffle = ChannelShuffle(groups)
        self.dw = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.pw2 = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if self.concat else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.dw(self.shuffle(self.relu1(self.bn1(self.pw1(x))))))
        out = self.bn3(self.pw2(out))
        if self.concat:
            return self.relu(torch.cat([out, self.shortcut(x)], dim=1))
        return self.relu(out + self.shortcut(x))


@spec_module("zoo.ShuffleNet")
class ShuffleNet(ZooModule):
    """stem (conv1-bn1-relu) -> stage1..3 (Sequential of ShuffleUnit) -> pool -> fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, groups: int = 3,
                 stem: int = 24, widths: list[int] = (60, 120, 240), units: list[int] = (2, 2, 2)):
        super().__init__()
        self._record(in_channels=in_channels, num_classes=num_classes, groups=groups, stem=stem,
                     widths=list(widths), units=list(units))
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        c = stem
        for s, (w, n) in enumerate(zip(widths, units)):
            stage = [ShuffleUnit(c, w, groups, stride=2, group_first=s > 0)]
            stage += [ShuffleUnit(w, w, groups) for _ in range(n - 1)]
            setattr(self, f"stage{s + 1}", nn.Sequential(*stage))
            c = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(self.pool(x).flatten(1))


def build_shufflenet(*, num_classes: int = 10, in_channels: int = 1, input_size: int | list = 28,
                     groups: int = 3, width: float = 1.0, units: int | list[int] = 2) -> nn.Module:
    """ShuffleNet-style; ``groups`` in {1, 2, 3, 4, 8} (paper), ``units`` per stage (an int or
    three ints; the first of each stage has stride 2), ``width`` scales all widths."""
    name = "shufflenet"
    check_int(name, "num_classes", num_classes)
    check_int(name, "in_channels", in_channels)
    image_size(name, input_size, minimum=4)
    groups = check_choice(name, "groups", groups, (1, 2, 3, 4, 8))
    width = check_float(name, "width", width)
    units = check_ints(name, "units", units, n=3)
    stem = scaled(24, width, multiple=groups)
    widths, prev = [], stem
    for w in PAPER_WIDTHS[groups]:
        prev = max(scaled(w / 4, width, multiple=4 * groups), prev + groups)
        widths.append(prev)
    return ShuffleNet(in_channels=in_channels, num_classes=num_classes, groups=groups, stem=stem,
                      widths=widths, units=units)
