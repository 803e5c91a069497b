import torch
from torch import nn

from dnnzip.prune.graph import Graph
from dnnzip.prune.shuffle import GroupedConvPruner, Layout
from dnnzip.registry import Context, apply
from dnnzip.zoo.shufflenet import ChannelShuffle


class ShuffleBlock(nn.Module):
    """1x1 conv -> BN -> ReLU -> shuffle(3) -> depthwise -> BN -> grouped 1x1 -> head; the
    zoo ShuffleNet's mid width 15 (5 positions per group, not a multiple of 3)."""

    def __init__(self, mid=15, groups=3):
        super().__init__()
        self.pw1 = nn.Conv2d(1, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(groups)
        self.dw = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.pw2 = nn.Conv2d(mid, 6, 1, groups=groups, bias=False)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.shuffle(torch.relu(self.bn1(self.pw1(x))))
        x = self.pw2(self.bn2(self.dw(x)))
        return self.fc(x.mean((2, 3)))


def _randomise_bn(m):
    with torch.no_grad():
        for b in (m.bn1, m.bn2):
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2.0)
            b.weight.uniform_(0.5, 1.5)
            b.bias.uniform_(-0.5, 0.5)


def test_shuffle_group_removal_is_exact_for_channels_that_contribute_nothing(h):
    torch.manual_seed(0)
    m = ShuffleBlock().eval()
    _randomise_bn(m)
    post = [3, 4, 5, 9, 10, 11]  # shuffle positions 1 and 3 of every group
    pre = [(p % 3) * 5 + p // 3 for p in post]
    with torch.no_grad():
        m.pw1.weight[pre] *= 1e-3  # lowest l1 (producers: pw1 rows and dw filters)
        m.dw.weight[post] *= 1e-3
        for p in post:  # pw2 reads post-shuffle channel p in its group p // 5
            g, j = divmod(p, 5)
            m.pw2.weight[2 * g:2 * g + 2, j] = 0
    x = torch.randn(3, 1, 6, 6)
    ref = m(x)
    out = apply("prune.channel", m, {"ratio": 0.4, "finetune": False}, Context(example_input=x))
    assert out.pw1.out_channels == out.dw.out_channels == out.pw2.in_channels == 9
    assert out.pw2.groups == 3 and out.shuffle.groups == 3
    assert torch.allclose(out(x), ref, atol=1e-5)
    keep_pre = [c for c in range(15) if c not in pre]
    assert torch.equal(out.pw1.weight, m.pw1.weight[keep_pre])
    assert torch.equal(h.reload(out, ShuffleBlock())(x), out(x))


def test_shuffle_group_keeps_every_conv_group_equal_and_runs(h):
    ctx = h.make_ctx((1, 6, 6))
    for criterion in ("l1", "bn_scale", "taylor", "thinet"):
        out = apply("prune.channel", ShuffleBlock().eval(), {"criterion": criterion,
                                                             "ratio": 0.5, "finetune": False}, ctx)
        # 0.5 of 15 = 7 -> the largest balanced removal below it is 6 (two positions x 3)
        assert out.pw1.out_channels == out.pw2.in_channels == 9, criterion
        assert out(ctx.example_input).shape == (4, 5)


def test_layout_dp_picks_cheapest_balanced_set():
    # 3 shuffle groups x 5 positions; atoms = positions (post j*3..j*3+2), pw2 groups of 5
    atoms = [[j * 3 + i for i in range(3)] for j in range(5)]
    part = [p // 5 for p in range(15)]
    lay = Layout(15, atoms=atoms, partitions=[(3, part)])
    scores = torch.arange(15, dtype=torch.float64)
    assert lay.lowest(scores, 7) == [3, 4, 5, 9, 10, 11]  # {1, 3}: the only balanced 6
    assert lay.lowest(scores, 9) == [0, 1, 2, 6, 7, 8, 12, 13, 14]  # {0, 2, 4}
    assert lay.lowest(scores, 5) == []  # nothing balanced fits
    free = Layout(15, atoms=atoms)  # no grouped conv: the cheapest positions
    assert free.lowest(scores, 7) == [0, 1, 2, 3, 4, 5]


def test_grouped_conv_rule_removes_different_positions_per_group():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 1, groups=2, bias=False)
    x = torch.randn(1, 6, 3, 3)
    keep = [0, 2, 3, 4]  # group 0 loses local 1, group 1 loses local 2
    ref = conv(x * torch.tensor([1.0 if c in keep else 0.0 for c in range(6)]).view(1, 6, 1, 1))
    GroupedConvPruner().prune_in_channels(conv, [1, 5])
    assert conv.in_channels == 4 and conv.weight.shape == (4, 2, 1, 1)
    assert torch.allclose(conv(x[:, keep]), ref, atol=1e-6)


def test_zoo_shufflenet_is_pruned(h):
    from dnnzip import zoo
    torch.manual_seed(0)
    m = zoo.build("shufflenet").eval()
    x = torch.randn(2, 1, 28, 28)
    names = {g.name for g in Graph(m, x).groups}
    assert len(names) == 6  # the mid channels of every unit
    out = apply("prune.channel", m, {"ratio": 0.5, "finetune": False}, Context(example_input=x))
    assert out(x).shape == m(x).shape
    assert [out.stage1[0].pw1.out_channels, out.stage2[0].pw1.out_channels,
            out.stage3[0].pw1.out_channels] == [9, 18, 33]


def test_registered_barrier_still_blocks():
    from dnnzip.prune import graph

    class Mix(nn.Module):
        def forward(self, x):
            return x.flip(1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 6, 1)
            self.mix = Mix()
            self.b = nn.Conv2d(6, 3, 1)

        def forward(self, x):
            return self.b(self.mix(self.a(x))).mean((2, 3))

    graph.register_barrier(Mix)
    try:
        assert Graph(Net(), torch.randn(1, 1, 4, 4)).groups == []
    finally:
        graph._BARRIERS.discard(Mix)
