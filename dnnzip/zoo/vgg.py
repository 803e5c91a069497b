"""A small VGG-style CNN with BatchNorm (Simonyan & Zisserman 2015; BN from Ioffe & Szegedy
2015), sized for 28x28 grey images: 3x3 conv-BN-ReLU stacks 32-32-M-64-64-M-128-M, then a
two-layer classifier. BN scales make it the natural target of network slimming (Liu et al. 2017;
survey channel pruning) and of BN folding before int8 export.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from dnnzip.nn.spec import spec_module
from dnnzip.zoo._common import (ZooModule, check_float, check_int, fail, image_size, pool_out,
                                scaled)

DEFAULT_CFG = (32, 32, "M", 64, 64, "M", 128, "M")


@spec_module("zoo.VGG")
class VGG(ZooModule):
    """``features`` (named conv{i}/bn{i}/relu{i}/pool{j}) -> flatten -> ``classifier``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 cfg: list = DEFAULT_CFG, hidden: int = 256, fc_in: int = 1152):
        super().__init__()
        self._record(in_channels=in_channels, num_classes=num_classes, cfg=list(cfg),
                     hidden=hidden, fc_in=fc_in)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c, i, j = in_channels, 0, 0
        for v in cfg:
            if v == "M":
                j += 1
                layers[f"pool{j}"] = nn.MaxPool2d(2)
            else:
                i += 1
                layers[f"conv{i}"] = nn.Conv2d(c, v, 3, padding=1, bias=False)
                layers[f"bn{i}"] = nn.BatchNorm2d(v)
                layers[f"relu{i}"] = nn.ReLU()
                c = v
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(OrderedDict(
            fc1=nn.Linear(fc_in, hidden), relu=nn.ReLU(), fc2=nn.Linear(hidden, num_classes)))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def build_vgg_bn(*, num_classes: int = 10, in_channels: int = 1, input_size: int | list = 28,
                 width: float = 1.0, hidden: int = 256) -> nn.Module:
    """VGG-BN; ``width`` multiplies every conv width and ``hidden`` (the classifier width)."""
    name = "vgg_bn"
    check_int(name, "num_classes", num_classes)
    check_int(name, "in_channels", in_channels)
    h, w = image_size(name, input_size)
    width = check_float(name, "width", width)
    check_int(name, "hidden", hidden)
    cfg = [v if v == "M" else scaled(v, width) for v in DEFAULT_CFG]
    for v in cfg:
        if v == "M":
            if min(h, w) < 2:
                fail(name, "input_size", "at least 8 pixels (three 2x2 max-pools)", input_size)
            h, w = pool_out(h, 2), pool_out(w, 2)
    return VGG(in_channels=in_channels, num_classes=num_classes, cfg=cfg,
               hidden=scaled(hidden, width), fc_in=cfg[-2] * h * w)
