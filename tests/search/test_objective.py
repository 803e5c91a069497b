import pytest

from dnnzip.budget import Budget
from dnnzip.search.objective import AdaDeepObjective, Point

BASE = Point(bytes=1_700_000, latency_ms=1.0, energy_mj=0.02, accuracy=0.92)


def test_score_rewards_accuracy_and_energy_saving():
    obj = AdaDeepObjective(Budget.parse(min_accuracy="0.88"), BASE)
    a = Point(50_000, 0.5, 0.01, 0.90)
    b = Point(50_000, 0.5, 0.01, 0.89)
    c = Point(50_000, 0.5, 0.005, 0.90)
    assert obj.score(a) > obj.score(b)
    assert obj.score(c) > obj.score(a)
    # normalisation: accuracy at the floor and energy at E_max give 0
    assert obj.score(Point(1, 1, BASE.energy_mj, 0.88)) == pytest.approx(0.0, abs=1e-9)


def test_constraints_eq_26_27_and_floor():
    obj = AdaDeepObjective(Budget.parse(max_size="64KB", max_latency="0.5ms", min_accuracy="0.88"),
                           BASE)
    ok = Point(60_000, 0.4, 0.01, 0.90)
    too_big = Point(128_000, 0.4, 0.01, 0.90)
    too_slow = Point(60_000, 1.0, 0.01, 0.90)
    too_bad = Point(60_000, 0.4, 0.01, 0.80)
    assert obj.feasible(ok) and obj.distance(ok) == 0
    for p in (too_big, too_slow, too_bad):
        assert not obj.feasible(p)
    assert obj.distance(too_big) == pytest.approx(1.0)


def test_accuracy_drop_floor_uses_baseline():
    obj = AdaDeepObjective(Budget.parse(max_accuracy_drop="1%"), BASE)
    assert obj.acc_min == pytest.approx(0.91)
    assert not obj.feasible(Point(1, 0.1, 0.01, 0.905))
