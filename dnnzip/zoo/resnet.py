"""A small CIFAR-style ResNet (He et al. 2016, "Deep Residual Learning", Sec. 4.2): a 3x3 stem,
three stages of basic blocks (widths 16-32-64 times ``width``, strides 1-2-2), global average
pooling and one linear layer. Down-sampling blocks use a 1x1 conv + BN projection shortcut
(option B); the others an identity shortcut.

Each block is its own ``BasicBlock`` module inside ``layer{1,2,3}`` (an ``nn.Sequential``), so
layer pruning can drop a whole block whose shortcut is the identity (``block.removable``): the
stage's output shape is unchanged.
"""
from __future__ import annotations

from torch import Tensor, nn

from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import ZooModule, check_float, check_int, check_ints, image_size, scaled


@spec_module("zoo.BasicBlock")
class BasicBlock(ZooModule):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self._record(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    @property
    def removable(self) -> bool:
        """True when the shortcut is the identity, so replacing the block by it keeps shapes."""
        return isinstance(self.shortcut, nn.Identity)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


@spec_module("zoo.ResNet")
class ResNet(ZooModule):
    """stem (conv1-bn1-relu) -> layer1..3 -> pool -> fc."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: list[int] = (16, 32, 64), blocks: list[int] = (2, 2, 2)):
        super().__init__()
        self._record(in_channels=in_channels, num_classes=num_classes, widths=list(widths),
                     blocks=list(blocks))
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        c = widths[0]
        for s, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if s == 0 else 2
            stage = [BasicBlock(c, w, stride)] + [BasicBlock(w, w) for _ in range(n - 1)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*stage))
            c = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def build_resnet(*, num_classes: int = 10, in_channels: int = 1, input_size: int | list = 28,
                 width: float = 1.0, blocks: int | list[int] = 2) -> nn.Module:
    """ResNet-(6n+2): ``blocks`` per stage (an int or three ints; 2 -> ResNet-14, 3 -> ResNet-20),
    ``width`` multiplies the stage widths 16-32-64."""
    name = "resnet"
    check_int(name, "num_classes", num_classes)
    check_int(name, "in_channels", in_channels)
    image_size(name, input_size, minimum=4)  # global pooling: any size >= 4 works
    width = check_float(name, "width", width)
    blocks = check_ints(name, "blocks", blocks, n=3)
    return ResNet(in_channels=in_channels, num_classes=num_classes,
                  widths=[scaled(c, width) for c in (16, 32, 64)], blocks=blocks)
