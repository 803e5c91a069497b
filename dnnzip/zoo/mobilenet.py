"""A MobileNet-style net (Howard et al. 2017, "MobileNets", Sec. 3; survey: depthwise-separable
convolutions with width multiplier): a 3x3 stem, then depthwise-separable blocks
(3x3 depthwise conv + BN + ReLU, 1x1 pointwise conv + BN + ReLU), global average pooling, linear.

Sized for 28x28 inputs: the stem keeps stride 1 and the block list is the first, narrow half of
MobileNet-v1 (64, 128/2, 128, 256/2, 256) since later 512/1024 stages would see 2x2 maps.
``width_mult`` is the paper's alpha: every layer's channel count is scaled by it (Eq. 5 cost
``alpha M`` inputs, ``alpha N`` outputs). The resolution multiplier is the input size itself.
"""
from __future__ import annotations

from torch import Tensor, nn

from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import ZooModule, check_float, check_int, image_size, scaled

# (out_channels, stride) of each depthwise-separable block; the stem has 32 channels.
DEFAULT_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1))


@spec_module("zoo.DepthwiseSeparable")
class DepthwiseSeparable(ZooModule):
    """dw: 3x3 conv with groups=in_channels, bn1, relu1; pw: 1x1 conv, bn2, relu2."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self._record(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.dw = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1,
                            groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(self.bn2(self.pw(self.relu1(self.bn1(self.dw(x))))))


@spec_module("zoo.MobileNet")
class MobileNet(ZooModule):
    """stem (conv1-bn1-relu) -> blocks (Sequential of DepthwiseSeparable) -> pool -> fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, stem: int = 32,
                 blocks: list = DEFAULT_BLOCKS):
        super().__init__()
        blocks = [list(b) for b in blocks]
        self._record(in_channels=in_channels, num_classes=num_classes, stem=stem, blocks=blocks)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        layers, c = [], stem
        for out, stride in blocks:
            layers.append(DepthwiseSeparable(c, out, stride))
            c = out
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def build_mobilenet(*, num_classes: int = 10, in_channels: int = 1, input_size: int | list = 28,
                    width_mult: float = 1.0) -> nn.Module:
    """MobileNet-style; ``width_mult`` (alpha) scales every layer (at least 4 channels each)."""
    name = "mobilenet"
    check_int(name, "num_classes", num_classes)
    check_int(name, "in_channels", in_channels)
    image_size(name, input_size, minimum=4)
    a = check_float(name, "width_mult", width_mult)
    return MobileNet(in_channels=in_channels, num_classes=num_classes,
                     stem=scaled(32, a, minimum=4),
                     blocks=[[scaled(c, a, minimum=4), s] for c, s in DEFAULT_BLOCKS])
