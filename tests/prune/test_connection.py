import pytest
import torch
from torch import nn

from dnnzip.errors import ConfigError
from dnnzip.prune.connection import ConnectionPruneConfig
from dnnzip.prune.masked import MaskedLinear, sparsity_report
from dnnzip.prune.schedule import Schedule, sparsity_steps
from dnnzip.registry import apply


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 5))


def test_per_layer_sparsity_is_exact_and_smallest_weights_go(h):
    m = mlp()
    out = apply("prune.connection", m, {"sparsity": 0.75}, h.make_ctx((64,)))
    for i in (1, 3):
        w, mask = out[i].weight, out[i].weight_mask
        assert isinstance(out[i], MaskedLinear)
        assert abs((mask == 0).float().mean().item() - 0.75) < 1e-2
        assert torch.equal(w == 0, mask == 0)
        kept_min = m[i].weight.abs()[mask.bool()].min()
        cut_max = m[i].weight.abs()[~mask.bool()].max()
        assert kept_min >= cut_max


def test_global_scope_uses_one_threshold(h):
    m = mlp()
    with torch.no_grad():
        m[3].weight.mul_(100)  # the head is far larger: global pruning spares it
    out = apply("prune.connection", m, {"sparsity": 0.5, "scope": "global"}, h.make_ctx((64,)))
    rep = sparsity_report(out)
    assert rep["layers"]["3"] < 0.05 and rep["layers"]["1"] > 0.5


def test_global_removing_a_whole_layer_is_named_error(h):
    m = mlp()
    with torch.no_grad():
        m[3].weight.mul_(1e-6)
    with pytest.raises(ConfigError, match="every weight of layer '3'"):
        apply("prune.connection", m, {"sparsity": 0.9, "scope": "global"}, h.make_ctx((64,)))


def test_schedules_end_at_target_and_agp_front_loads():
    assert sparsity_steps(Schedule.ONE_SHOT, 0.9, 5) == [0.9]
    it = sparsity_steps(Schedule.ITERATIVE, 0.9, 3)
    agp = sparsity_steps(Schedule.AGP, 0.9, 3)
    assert it[-1] == agp[-1] == 0.9
    assert all(a < b for a, b in zip(it, it[1:]))
    assert agp[0] > it[0]  # AGP prunes fastest at the start
    # iterative: each round removes the same fraction of what is left
    keep = [1 - s for s in it]
    assert keep[1] / keep[0] == pytest.approx(keep[2] / keep[1])


def test_masks_hold_through_finetuning_and_input_untouched(h):
    m = mlp()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ctx = h.make_ctx((64,), epochs=2)
    out = apply("prune.connection", m, {"sparsity": 0.8, "schedule": "iterative", "steps": 2}, ctx)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    for i in (1, 3):
        assert torch.equal(out[i].weight == 0, out[i].weight_mask == 0)
        assert (out[i].weight_mask == 0).float().mean() > 0.79
    assert ctx.extra["prune.connection"]["total"] > 0.79


def test_splicing_lets_pruned_weights_learn(h):
    layer = MaskedLinear(4, 3)
    layer.weight_mask[0, 0] = 0
    layer.straight_through = True
    layer.train()
    layer(torch.ones(2, 4)).sum().backward()
    assert layer.weight.grad[0, 0] != 0  # DNS: the gradient reaches the cut weight
    layer.straight_through = False
    layer.weight.grad = None
    layer(torch.ones(2, 4)).sum().backward()
    assert layer.weight.grad[0, 0] == 0  # Han: it does not
    out = apply("prune.connection", mlp(), {"sparsity": 0.7, "splicing": True},
                h.make_ctx((64,), epochs=1))
    assert (out[1].weight_mask == 0).float().mean() >= 0.69


def test_std_scale_rule_and_overrides(h):
    m = mlp()
    out = apply("prune.connection", m, {"std_scale": 1.0}, h.make_ctx((64,)))
    w = m[1].weight
    expected = (w.abs() < w.std()).float().mean()
    assert (out[1].weight_mask == 0).float().mean() == pytest.approx(float(expected), abs=1e-3)
    out = apply("prune.connection", m, {"sparsity": 0.5, "layer_sparsity": {"3": 0.0}},
                h.make_ctx((64,)))
    assert out[3].weight_mask.all()
    out = apply("prune.connection", m, {"sparsity": 0.5, "ignore": ["3"]}, h.make_ctx((64,)))
    assert type(out[3]) is nn.Linear


def test_masked_model_reloads_from_spec_with_identical_outputs(h):
    out = apply("prune.connection", mlp(), {"sparsity": 0.6}, h.make_ctx((64,)))
    x = torch.randn(3, 64)
    assert torch.equal(h.reload(out, mlp())(x), out(x))


@pytest.mark.parametrize("bad", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"steps": 0},
                                 {"scope": "everywhere"}, {"layer_sparsity": {"1": 1.5}}])
def test_bad_config_is_config_error(bad):
    with pytest.raises(ConfigError):
        ConnectionPruneConfig(**bad)


def test_override_naming_no_layer_is_error(h):
    with pytest.raises(ConfigError, match="fc9"):
        apply("prune.connection", mlp(), {"layer_sparsity": {"fc9": 0.5}}, h.make_ctx((64,)))
