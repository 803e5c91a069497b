"""LeNet-300-100: the fully connected MNIST baseline of LeCun et al. (1998), used by Han et al.,
"Learning both Weights and Connections" / Deep Compression (survey Sec. on connection pruning,
Eq. 1) as its first benchmark: 784-300-100-10 with ReLU, 266,610 parameters.
"""
from __future__ import annotations

from torch import Tensor, nn

from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import ZooModule, check_int, check_ints, image_size


@spec_module("zoo.LeNet300")
class LeNet300(ZooModule):
    """Flatten, then fc1-ReLU-fc2-ReLU-fc3. Accepts (N, C, H, W) or already flat (N, C*H*W)."""

    def __init__(self, in_features: int = 784, hidden: list[int] | tuple[int, ...] = (300, 100),
                 num_classes: int = 10):
        super().__init__()
        self._record(in_features=in_features, hidden=list(hidden), num_classes=num_classes)
        h1, h2 = hidden
        self.fc1 = nn.Linear(in_features, h1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(h1, h2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(h2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


def build_lenet300(*, num_classes: int = 10, in_channels: int = 1, input_size: int | list = 28,
                   hidden: list[int] = (300, 100)) -> nn.Module:
    """LeNet-300-100; ``hidden`` is the two hidden widths."""
    name = "lenet300"
    check_int(name, "num_classes", num_classes)
    check_int(name, "in_channels", in_channels)
    h, w = image_size(name, input_size)
    hidden = check_ints(name, "hidden", hidden, n=2)
    return LeNet300(in_features=in_channels * h * w, hidden=hidden, num_classes=num_classes)
