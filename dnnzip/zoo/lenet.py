"""LeNet-5, Caffe variant (the `examples/mnist/lenet.prototxt` net that Han et al. prune in
"Learning both Weights and Connections" and Deep Compression, Table 2; survey Eq. 1):
conv1 1->20 5x5, max-pool 2, conv2 20->50 5x5, max-pool 2, fc1 800->500, ReLU, fc2 500->10.
431,080 parameters and 2,293,000 MACs on 1x28x28.

Deviation: Caffe has no non-linearity after the convolutions; we add a ReLU after each (the
common PyTorch port, trains better, changes neither parameters nor MACs). ``conv_relu=False``
restores the exact Caffe graph.
"""
from __future__ import annotations

from torch import Tensor, nn

from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import (ZooModule, check_bool, check_int, check_ints, fail, image_size,
                                pool_out)


@spec_module("zoo.LeNet5")
class LeNet5(ZooModule):
    """conv1-relu1-pool1-conv2-relu2-pool2-flatten-fc1-relu3-fc2."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, fc_in: int = 800,
                 padding: int = 0, conv_relu: bool = True, widths: list[int] = (20, 50, 500)):
        super().__init__()
        self._record(in_channels=in_channels, num_classes=num_classes, fc_in=fc_in,
                     padding=padding, conv_relu=conv_relu, widths=list(widths))
        c1, c2, f1 = widths
        act = nn.ReLU if conv_relu else nn.Identity
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=padding)
        self.relu1 = act()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=padding)
        self.relu2 = act()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(fc_in, f1)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(f1, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))


def build_lenet5(*, num_classes: int = 10, in_channels: int = 1, input_size: int | list = 28,
                 padding: int | None = None, conv_relu: bool = True,
                 widths: list[int] = (20, 50, 500)) -> nn.Module:
    """LeNet-5 (Caffe). ``padding`` of both convs defaults to 0, or 2 for inputs under 16 pixels
    (e.g. 8x8 digits, which a 5x5 'valid' conv pair would shrink below one pixel);
    ``widths`` = (conv1, conv2, fc1) widths."""
    name = "lenet5"
    check_int(name, "num_classes", num_classes)
    check_int(name, "in_channels", in_channels)
    h, w = image_size(name, input_size)
    if padding is None:
        padding = 0 if min(h, w) >= 16 else 2
    check_int(name, "padding", padding, low=0)
    check_bool(name, "conv_relu", conv_relu)
    widths = check_ints(name, "widths", widths, n=3)
    for _ in range(2):  # conv 5x5 then max-pool 2
        h, w = h + 2 * padding - 4, w + 2 * padding - 4
        if min(h, w) < 2:
            fail(name, "input_size", "large enough for two 5x5 conv + 2x2 pool stages "
                 "(>= 16, or pass padding=2)", input_size)
        h, w = pool_out(h, 2), pool_out(w, 2)
    return LeNet5(in_channels=in_channels, num_classes=num_classes, fc_in=widths[1] * h * w,
                  padding=padding, conv_relu=conv_relu, widths=widths)
