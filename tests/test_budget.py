import pytest

from dnnzip.budget import Budget, parse_energy, parse_fraction, parse_latency, parse_size
from dnnzip.errors import ConfigError


@pytest.mark.parametrize("text,expected", [("20KB", 20_000), ("20KiB", 20_480), ("1.5MB", 1_500_000),
                                           ("512", 512), ("64 kb", 64_000), (1000, 1000)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text,expected", [("0.5ms", 0.5), ("200us", 0.2), ("1s", 1000.0)])
def test_parse_latency(text, expected):
    assert parse_latency(text) == pytest.approx(expected)


def test_parse_energy_and_fraction():
    assert parse_energy("2mJ") == pytest.approx(2.0)
    assert parse_energy("500uJ") == pytest.approx(0.5)
    assert parse_fraction("88%") == pytest.approx(0.88)
    assert parse_fraction("0.9") == pytest.approx(0.9)


@pytest.mark.parametrize("bad", ["20XB", "", "-5KB", "abc", "0KB", "nanKB"])
def test_bad_size_names_the_problem(bad):
    with pytest.raises(ConfigError, match="size"):
        parse_size(bad)


def test_latency_without_unit_is_refused():
    with pytest.raises(ConfigError, match="unit"):
        parse_latency("5")


def test_fraction_out_of_range():
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        parse_fraction("120%")


def test_contradictory_accuracy_constraints():
    with pytest.raises(ConfigError, match="either"):
        Budget.parse(min_accuracy="0.9", max_accuracy_drop="1%")


def test_violations_name_each_constraint():
    b = Budget.parse(max_size="20KB", max_latency="0.2ms", min_accuracy="0.88")
    v = b.violations(bytes_=25_000, latency_ms=0.1, accuracy=0.80)
    assert len(v) == 2
    assert "size" in v[0] and "accuracy" in v[1]
    assert b.violations(bytes_=10_000, latency_ms=0.1, accuracy=0.9) == []


def test_accuracy_drop_relative_to_baseline():
    b = Budget.parse(max_accuracy_drop="1%")
    assert b.accuracy_floor(0.92) == pytest.approx(0.91)
    assert b.violations(accuracy=0.905, baseline_accuracy=0.92)
