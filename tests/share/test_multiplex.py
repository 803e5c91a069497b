import pytest
import torch
import torch.nn.functional as F

from dnnzip import registry, zoo
from dnnzip.artifact import pack, unpack
from dnnzip.data import load_data
from dnnzip.errors import ConfigError
from dnnzip.profile import count_macs
from dnnzip.registry import Context
from dnnzip.share.multiplex import multiplex_report
from dnnzip.train import TrainSettings, evaluate, fit


@pytest.fixture(scope="module")
def pair():
    """A weak small model and a stronger big one on 8x8 digits."""
    torch.set_num_threads(1)
    data = load_data("digits", seed=0)
    torch.manual_seed(0)
    small = zoo.build("lenet300", input_size=8, hidden=[8, 8])
    fit(small, data, TrainSettings(epochs=8, batch_size=32, lr=1e-2, progress=False))
    torch.manual_seed(1)
    big = zoo.build("lenet300", input_size=8, hidden=[64, 32])
    fit(big, data, TrainSettings(epochs=10, batch_size=32, lr=1e-2, progress=False))
    return small.eval(), big.eval(), data


def _ctx(data, teacher, **kw):
    return Context(data=data, teacher=teacher, epochs=1, batch_size=64, seed=0, **kw)


def test_confidence_routes_low_confidence_to_big(pair):
    small, big, data = pair
    mux = registry.apply("share.multiplex", small, {"threshold": 0.8}, _ctx(data, big))
    x = torch.stack([data.test[i][0] for i in range(200)])
    with torch.no_grad():
        ls, lb, out = small(x), big(x), mux(x)
    low = F.softmax(ls, -1).max(-1).values < 0.8
    assert 0 < int(low.sum()) < len(x)  # the test exercises both branches
    torch.testing.assert_close(mux.to_big(x, ls), low, rtol=0, atol=0)
    torch.testing.assert_close(out[low], lb[low])
    torch.testing.assert_close(out[~low], ls[~low])
    assert out.shape == ls.shape


def test_confidence_target_share_sets_threshold(pair):
    small, big, data = pair
    mux = registry.apply("share.multiplex", small, {"target_big_share": 0.25}, _ctx(data, big))
    rows = multiplex_report(mux, data, thresholds=[1.0 - mux.threshold], split="val")
    assert rows[0]["big_share"] == pytest.approx(0.25, abs=0.03)


def test_learned_router_trains_and_hits_target_share(pair):
    small, big, data = pair
    ctx = _ctx(data, big, lr=1e-2)
    untrained = registry.apply("share.multiplex", small, {"mode": "learned", "router_epochs": 0},
                               ctx)
    mux = registry.apply("share.multiplex", small,
                         {"mode": "learned", "router_epochs": 8, "target_big_share": 0.3}, ctx)
    before = untrained.router.state_dict()
    assert any(not torch.equal(before[k], v) for k, v in mux.router.state_dict().items())
    # the router ranks "small wrong, big right" inputs above "small right" ones on training data
    xs, ys = zip(*data.loader("train", batch_size=512))
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        ls = small(x)
        s = mux.route_scores(x, ls)
        s0 = untrained.route_scores(x, ls)
        need = (ls.argmax(-1) != y) & (big(x).argmax(-1) == y)
        fine = ls.argmax(-1) == y
    assert need.sum() > 5
    gap = s[need].mean() - s[fine].mean()
    assert gap > 0.1 and gap > s0[need].mean() - s0[fine].mean()
    rows = multiplex_report(mux, data, thresholds=[mux.threshold], split="val")
    assert rows[0]["big_share"] == pytest.approx(0.3, abs=0.03)
    # routing hard inputs to the big model beats the small model alone
    assert evaluate(mux, data.test) > evaluate(small, data.test)


def test_needs_teacher_with_same_output_shape(pair):
    small, big, data = pair
    with pytest.raises(ConfigError, match="ctx.teacher"):
        registry.apply("share.multiplex", small, None, _ctx(data, None))
    other = zoo.build("lenet300", input_size=8, hidden=[4, 4], num_classes=5)
    with pytest.raises(ConfigError, match=r"\(8, 5\)"):
        registry.apply("share.multiplex", small, None, _ctx(data, other, example_input=None))
    with pytest.raises(ConfigError, match="'mode'"):
        registry.get("share.multiplex").config({"mode": "random"})


@pytest.mark.parametrize("mode", ["confidence", "learned"])
def test_pack_unpack_rebuilds_from_structure(pair, tmp_path, mode):
    small, big, data = pair
    mux = registry.apply("share.multiplex", small, {"mode": mode, "router_epochs": 1,
                                                    "target_big_share": 0.4},
                         _ctx(data, big, max_batches=3))
    assert mux._dnnzip_ref["structure"] is True
    path = tmp_path / "mux.dnz"
    pack(mux, path)
    back = unpack(path)
    assert type(back) is type(mux) and back.mode == mode and back.threshold == mux.threshold
    x = torch.stack([data.test[i][0] for i in range(64)])
    with torch.no_grad():
        torch.testing.assert_close(back(x), mux(x), rtol=0, atol=0)


def test_report_rows_trade_accuracy_for_macs(pair):
    small, big, data = pair
    mux = registry.apply("share.multiplex", small, None, _ctx(data, big))
    rows = multiplex_report(mux, data)
    x1 = data.example_input(1)
    m_small = sum(c.macs_dense for c in count_macs(small, x1))
    m_big = sum(c.macs_dense for c in count_macs(big, x1))
    shares = [r["big_share"] for r in rows]
    assert shares == sorted(shares, reverse=True) and shares[0] == 1.0 and shares[-1] == 0.0
    assert rows[0]["accuracy"] == pytest.approx(evaluate(big, data.test))
    assert rows[-1]["accuracy"] == pytest.approx(evaluate(small, data.test))
    for r in rows:
        assert r["mean_macs"] == pytest.approx(m_small + r["big_share"] * m_big)
