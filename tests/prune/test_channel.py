import pytest
import torch
from torch import nn

from dnnzip.errors import ConfigError, UnsupportedLayerError
from dnnzip.prune import criteria as C
from dnnzip.prune.channel import ChannelPruneConfig, score_groups
from dnnzip.prune.graph import Graph
from dnnzip.registry import Context, apply

CRITERIA = ["l1", "l2", "bn_scale", "taylor", "thinet", "reconstruction"]


@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_gives_smaller_dense_model_that_reloads(criterion, h):
    m = h.ResNetLike().eval()
    ctx = h.make_ctx((1, 16, 16))
    out = apply("prune.channel", m, {"criterion": criterion, "ratio": 0.5}, ctx)
    # the residual add couples c1/b1/c2/b2: one group of 8 -> 4; c3 (6) -> 3
    assert out.c1.out_channels == out.c2.out_channels == out.b2.num_features == 4
    assert out.c3.out_channels == 3 and out.fc.in_features == 3 * 16
    assert out.fc.out_features == 5  # the output layer is never pruned
    assert m.c1.out_channels == 8  # the input is untouched
    x = ctx.example_input
    assert out(x).shape == m(x).shape
    assert torch.equal(h.reload(out, h.ResNetLike())(x), out(x))


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
@pytest.mark.parametrize("use_state", [False, True])
def test_rnn_hidden_units_are_pruned(cls, use_state, h):
    m = h.ConvRNN(cls, layers=2, use_state=use_state).eval()
    ctx = h.make_ctx((3, 7))
    out = apply("prune.channel", m, {"ratio": 0.5}, ctx)
    assert out.rnn.hidden_size == 8 and out.rnn.input_size == 6 and out.fc.in_features == 8
    x = ctx.example_input
    assert out(x).shape == (4, 5)
    assert torch.equal(h.reload(out, h.ConvRNN(cls, 2, use_state))(x), out(x))


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
def test_rnn_rule_is_exact_for_disconnected_units(cls, h):
    """A hidden unit nobody reads (zero columns downstream) can be removed without any change."""
    torch.manual_seed(1)
    m = h.ConvRNN(cls, layers=2).eval()
    dead = [3, 9]
    with torch.no_grad():
        for l in range(2):
            getattr(m.rnn, f"weight_hh_l{l}")[:, dead] = 0
        m.rnn.weight_ih_l1[:, dead] = 0
        m.fc.weight[:, dead] = 0
    x = torch.randn(2, 3, 7)
    ref = m(x)
    g = Graph(m, x)
    group = next(q for q in g.groups if q.name == "rnn")
    g.prune(group, dead)
    assert m.rnn.hidden_size == 14
    assert torch.allclose(m(x), ref, atol=1e-6)


@pytest.mark.parametrize("criterion", ["thinet", "reconstruction"])
def test_next_layer_criteria_find_channels_that_contribute_nothing(criterion, h):
    m = h.ResNetLike().eval()
    with torch.no_grad():  # the c1 group's channels 2..4 barely reach c2 and c3's outputs
        m.c3.weight[:, 2:5] *= 1e-4
        m.c2.weight[:, 2:5] *= 1e-4
    ctx = h.make_ctx((1, 16, 16))
    g = Graph(m, ctx.example_input)
    scores, _ = score_groups(m, g, ChannelPruneConfig(criterion=criterion), ctx)
    assert set(torch.argsort(scores["c1"])[:3].tolist()) == {2, 3, 4}


def test_least_squares_refit_reduces_reconstruction_error(h):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 5)).eval()
    ctx = h.make_ctx((1, 4, 4))
    x = ctx.example_input
    errs = {}
    for ls in (False, True):
        m = apply("prune.channel", base, {"criterion": "reconstruction", "ratio": 0.5,
                                          "least_squares": ls, "finetune": False,
                                          "ignore": ["2"]}, ctx)
        with torch.no_grad():
            errs[ls] = float((m[:3](x) - base[:3](x)).pow(2).mean())
    assert errs[True] < 0.7 * errs[False]


def test_lasso_and_thinet_rank_useless_channel_last():
    torch.manual_seed(0)
    Z = torch.randn(5, 200)
    Z[3] *= 1e-3
    assert int(torch.argmin(C.thinet_scores(Z))) == 3
    assert int(torch.argmin(C.lasso_scores(Z))) == 3


def test_bn_scale_and_slimming(h):
    m = h.ResNetLike().eval()
    with torch.no_grad():
        m.b1.weight.fill_(1.0)
        m.b2.weight.fill_(1.0)
        m.b1.weight[[0, 5]] = 1e-3
        m.b2.weight[[0, 5]] = 1e-3
    g = Graph(m, torch.randn(2, 1, 16, 16))
    s = C.bn_scale(next(q for q in g.groups if q.name == "c1"))
    assert set(torch.argsort(s)[:2].tolist()) == {0, 5}
    ctx = h.make_ctx((1, 16, 16), epochs=1)
    gamma0 = m.b1.weight.abs().sum().item()
    out = apply("prune.channel", m, {"criterion": "bn_scale", "slimming": 0.5, "ratio": 0.25,
                                     "finetune": False}, ctx)
    assert out.c1.out_channels == 6


def test_global_scope_prunes_unevenly_and_caps(h):
    m = h.ResNetLike().eval()
    with torch.no_grad():
        m.c3.weight[:3] *= 1e-3  # three of c3's filters are far below the rest of any group
    out = apply("prune.channel", m, {"scope": "global", "ratio": 0.4, "finetune": False},
                h.make_ctx((1, 16, 16)))
    # 40 % of 14 channels = 5: c3's three tiny filters, then the two weakest of the c1 group
    assert out.c3.out_channels == 3 and out.c1.out_channels == 6
    out = apply("prune.channel", m, {"scope": "global", "ratio": 0.7, "max_layer_ratio": 0.5,
                                     "finetune": False}, h.make_ctx((1, 16, 16)))
    assert out.c3.out_channels == 3 and out.c1.out_channels == 4  # capped at half each


def test_threshold_mode_and_layer_overrides(h):
    m = h.ResNetLike().eval()
    out = apply("prune.channel", m, {"layer_ratios": {"c3": 0.0}, "finetune": False},
                h.make_ctx((1, 16, 16)))
    assert out.c3.out_channels == 6 and out.c1.out_channels == 4
    out = apply("prune.channel", m, {"threshold": 0.999, "max_layer_ratio": 0.5,
                                     "finetune": False}, h.make_ctx((1, 16, 16)))
    assert out.c1.out_channels == 4 and out.c3.out_channels == 3
    out = apply("prune.channel", m, {"ignore": ["c3"], "finetune": False},
                h.make_ctx((1, 16, 16)))
    assert out.c3.out_channels == 6


def test_round_to_keeps_multiples_and_the_best_channels(h):
    from dnnzip import zoo
    from dnnzip.prune.channel import rounded_removal
    assert [rounded_removal(16, 6, 8), rounded_removal(32, 12, 8), rounded_removal(64, 25, 8)] \
        == [8, 8, 24]  # keep 10 -> 8, 20 -> 24 (ties round up), 39 -> 40
    assert rounded_removal(8, 4, 8) == 0 and rounded_removal(12, 8, 8) == 4  # never below 8
    assert rounded_removal(20, 7, 1) == 7 and rounded_removal(16, 0, 8) == 0
    m = zoo.build("resnet").eval()
    ctx = Context(example_input=torch.randn(1, 1, 28, 28))
    plain = apply("prune.channel", m, {"ratio": 0.4, "finetune": False}, ctx)
    out = apply("prune.channel", m, {"ratio": 0.4, "round_to": 8, "finetune": False}, ctx)
    widths = [c.out_channels for c in plain.modules() if isinstance(c, nn.Conv2d)]
    assert 10 in widths and 39 in widths  # what ratio 0.4 leaves of 16 and 64 channels
    rounded = sorted({c.out_channels for c in out.modules() if isinstance(c, nn.Conv2d)})
    assert rounded == [8, 24, 40]
    assert out(ctx.example_input).shape == (1, 10)
    # rounding 10 -> 8 drops the two lowest-scored of the 10 channels ratio 0.4 keeps

    def origin(pruned):  # indices of the original stem filters a pruned model kept
        same = (m.conv1.weight[:, None] == pruned.conv1.weight[None]).flatten(2).all(-1)
        return {int(i) for i in torch.nonzero(same)[:, 0]}
    assert len(origin(out)) == 8 and origin(out) < origin(plain)
    with pytest.raises(ConfigError, match="round_to"):
        ChannelPruneConfig(round_to=0)


def test_grouped_conv_loses_same_channels_in_every_group(h):
    m = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(12, 12, 1, groups=3), nn.ReLU(),
                      nn.Conv2d(12, 6, 1, groups=3), nn.Flatten(), nn.Linear(6 * 16, 5)).eval()
    out = apply("prune.channel", m, {"ratio": 0.5, "finetune": False}, h.make_ctx((1, 4, 4)))
    assert out[0].out_channels % 3 == 0 and out[2].in_channels == out[0].out_channels
    assert out(torch.randn(2, 1, 4, 4)).shape == (2, 5)


def test_layer_with_no_rule_is_named_with_fix(h):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.scale

    m = nn.Sequential(nn.Linear(4, 4), Odd(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=r"'1' \(Odd\).*ignore="):
        apply("prune.channel", m, None, h.make_ctx((4,)))
    out = apply("prune.channel", m, {"ignore": ["1"], "finetune": False}, h.make_ctx((4,)))
    assert out(torch.randn(2, 4)).shape == (2, 2)


def test_untraceable_model_says_which_op(h):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            y = torch.from_numpy(self.fc(x).detach().numpy())  # leaves autograd
            return self.out(y)

    with pytest.raises(UnsupportedLayerError):
        Graph(Bad(), torch.randn(2, 4))
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match="cannot be traced.*shape"):
        Graph(m, torch.randn(2, 7))


def test_removing_every_channel_is_named_error_and_nothing_written(h):
    m = h.ResNetLike().eval()
    g = Graph(m, torch.randn(2, 1, 16, 16))
    with pytest.raises(ConfigError, match="every channel .* 'c3'"):
        g.prune(next(q for q in g.groups if q.name == "c3"), range(6))
    assert m.c3.out_channels == 6


@pytest.mark.parametrize("bad", [{"ratio": 1.0}, {"ratio": -0.5}, {"criterion": "random"},
                                 {"layer_ratios": {"c1": 2}}, {"threshold": 1.5},
                                 {"max_layer_ratio": 1.0}])
def test_bad_config_is_config_error(bad):
    with pytest.raises(ConfigError):
        ChannelPruneConfig(**bad)


def test_override_typo_is_named(h):
    with pytest.raises(ConfigError, match="'c9'"):
        apply("prune.channel", h.ResNetLike(), {"layer_ratios": {"c9": 0.5}},
              h.make_ctx((1, 16, 16)))


def test_channel_pruning_of_connection_pruned_model_keeps_masks(h):
    ctx = h.make_ctx((1, 16, 16))
    sparse = apply("prune.connection", h.ResNetLike().eval(), {"sparsity": 0.5}, ctx)
    out = apply("prune.channel", sparse, {"finetune": False}, ctx)
    assert out.c1.weight_mask.shape == out.c1.weight.shape
    assert torch.equal(out.c1.weight == 0, out.c1.weight_mask == 0)


def test_registered_rule_teaches_a_custom_layer(h):
    from torch_pruning.pruner.function import BasePruningFunc

    from dnnzip.prune import graph, register_rule

    class Scale(nn.Module):
        def __init__(self, n=6):
            super().__init__()
            self.scale = nn.Parameter(torch.arange(1.0, n + 1))

        def forward(self, x):
            return x * self.scale

    class ScaleRule(BasePruningFunc):
        TARGET_MODULES = (Scale,)

        def prune_out_channels(self, layer, idxs):
            keep = [i for i in range(layer.scale.numel()) if i not in set(idxs)]
            layer.scale = nn.Parameter(layer.scale.detach()[keep])
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return layer.scale.numel()

        get_in_channels = get_out_channels

    register_rule(Scale, ScaleRule())
    try:
        m = nn.Sequential(nn.Linear(4, 6), Scale(), nn.ReLU(), nn.Linear(6, 2)).eval()
        out = apply("prune.channel", m, {"ratio": 0.5, "finetune": False}, h.make_ctx((4,)))
        assert out[0].out_features == 3 and out[1].scale.numel() == 3
        assert out(torch.randn(2, 4)).shape == (2, 2)
    finally:
        graph._RULES.pop(Scale)


def test_transformer_ffn_neurons_pruned_attention_named(h):
    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(6, 16)
            self.enc = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.enc(self.inp(x)).mean(1))

    m, x = Enc().eval(), torch.randn(2, 5, 6)
    with pytest.raises(UnsupportedLayerError, match="'enc.self_attn' .*ignore="):
        apply("prune.channel", m, None, Context(example_input=x))
    out = apply("prune.channel", m, {"ignore": ["enc.self_attn"], "finetune": False},
                Context(example_input=x))
    assert out.enc.linear1.out_features == 16 and out.enc.linear2.in_features == 16
    assert out.inp.out_features == 16  # the residual stream feeds attention: kept
    assert out(x).shape == (2, 3)
