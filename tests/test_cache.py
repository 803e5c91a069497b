import pytest
import torch
from torch import nn

from dnnzip.cache import InferenceCache, evaluate_stream, repetitive_stream
from dnnzip.data.synthetic import synthetic
from dnnzip.errors import ConfigError, DataError

torch.manual_seed(0)


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.samples = 0

    def forward(self, x):
        self.samples += len(x)
        return self.net(x)


def test_exact_cache_hits_only_identical_inputs():
    model = Counting()
    cache = InferenceCache(model, mode="exact")
    a, b = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    out1 = cache(a)
    out2 = cache(torch.cat([a.clone(), b, a + 1e-6]))
    assert torch.equal(out2[0], out1[0]) and model.samples == 3  # a+1e-6 is a miss
    assert cache.hits == 1 and cache.misses == 3 and cache.hit_rate == 0.25
    assert torch.allclose(out2, model.net(torch.cat([a, b, a + 1e-6])))


def test_similar_cache_matches_near_duplicates_by_threshold():
    model = Counting()
    x = torch.randn(1, 1, 8, 8)
    near = x + 0.01 * torch.randn_like(x)
    far = torch.randn(1, 1, 8, 8)
    cache = InferenceCache(model, mode="similar", threshold=0.95, size=8)
    cache(x)
    cache(near)
    cache(far)
    assert cache.hits == 1 and cache.misses == 2
    strict = InferenceCache(Counting(), mode="similar", threshold=1.0)
    strict(x)
    strict(near)
    assert strict.hits == 0


def test_lru_eviction_respects_capacity():
    model = Counting()
    cache = InferenceCache(model, capacity=2)
    xs = [torch.randn(1, 1, 8, 8) for _ in range(3)]
    for x in xs:
        cache(x)
    cache(xs[0])  # evicted by xs[2]
    assert cache.hits == 0
    cache(xs[2])
    assert cache.hits == 1


def test_stream_evaluation_reports_hits_and_accuracy():
    data = synthetic((1, 8, 8), 4, n=64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    stream = repetitive_stream(data.test, 60, repeat=0.6, seed=0)
    exact = evaluate_stream(model, stream, mode="exact")
    assert 0.3 < exact["hit_rate"] < 0.9
    assert exact["accuracy_change"] == 0.0 and exact["agreement"] == 1.0  # exact reuse is lossless
    noisy = repetitive_stream(data.test, 60, repeat=0.6, noise=0.05, seed=0)
    sim = evaluate_stream(model, noisy, mode="similar", threshold=0.9)
    ex = evaluate_stream(model, noisy, mode="exact")
    assert sim["hit_rate"] > ex["hit_rate"]
    assert {"latency_ms", "cached_latency_ms", "saved_ms"} <= set(sim)
    two = evaluate_stream(model, noisy, mode="similar", threshold=0.9, rounds=2)
    assert two["hit_rate"] == sim["hit_rate"]  # a fresh cache per round: same hits each time
    assert two["saved_total_ms"] == pytest.approx(two["total_ms"] - two["cached_total_ms"])
    assert two["saved_ms"] == pytest.approx(two["saved_total_ms"] / 60)
    assert two["hit_latency_ms"] < two["miss_latency_ms"]  # a hit skips the model


def test_bad_inputs_are_named_errors():
    model = Counting()
    with pytest.raises(DataError, match="stream is empty"):
        evaluate_stream(model, [])
    with pytest.raises(ConfigError, match="mode"):
        InferenceCache(model, mode="fuzzy")
    with pytest.raises(ConfigError, match="threshold"):
        InferenceCache(model, mode="similar", threshold=2.0)
    with pytest.raises(DataError):
        repetitive_stream([], 5)
    with pytest.raises(ConfigError, match="rounds"):
        evaluate_stream(model, [(torch.zeros(1, 8, 8), 0)], rounds=0)
