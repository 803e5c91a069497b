"""Entropy coders: exact round trips, distance to the Shannon bound, hostile streams."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from dnnzip.artifact import coding
from dnnzip.errors import FormatError


def laplace_indices(n, k=32, seed=0):
    w = np.random.default_rng(seed).laplace(size=n)
    return np.searchsorted(np.linspace(w.min(), w.max(), k + 1)[1:-1], w)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 10), data=st.data(), coder=st.sampled_from(coding.CODERS))
def test_round_trip_any_symbols(bits, data, coder):
    alphabet = data.draw(st.integers(1, 1 << bits))
    symbols = data.draw(hnp.arrays(np.int64, st.integers(0, 3000),
                                   elements=st.integers(0, alphabet - 1)))
    stream, meta = coding.encode_symbols(symbols, alphabet=alphabet, coder=coder, bits=bits)
    out = coding.decode_symbols(stream, meta, count=len(symbols))
    np.testing.assert_array_equal(out, symbols)
    assert meta["symbols"] == len(symbols) and meta["coded_bits"] == 8 * len(stream)
    again, _ = coding.encode_symbols(symbols.copy(), alphabet=alphabet, coder=coder, bits=bits)
    assert again == stream  # deterministic bytes


def test_ans_is_within_half_a_percent_of_entropy():
    idx = laplace_indices(200_000)
    stream, meta = coding.encode_symbols(idx, alphabet=32, coder="ans", bits=5)
    assert 0 <= coding.shannon_gap(meta) < 0.005
    h_stream, h_meta = coding.encode_symbols(idx, alphabet=32, coder="huffman", bits=5)
    assert coding.shannon_gap(meta) < coding.shannon_gap(h_meta) < 0.06


def test_huffman_lengths_are_limited_and_prefix_free():
    counts = np.array([2 ** i for i in range(30)])  # Fibonacci-like skew needs > 16 bits
    lengths = coding.huffman_lengths(counts, max_len=16)
    assert lengths.max() == 16
    assert sum(2.0 ** -l for l in lengths) <= 1.0
    codes = coding.canonical_codes(lengths)
    words = {format(int(c), f"0{int(l)}b") for c, l in zip(codes, lengths)}
    assert not any(a != b and b.startswith(a) for a in words for b in words)


@settings(max_examples=50, deadline=None)
@given(values=hnp.arrays(np.int64, st.integers(0, 50), elements=st.integers(0, 2 ** 35 - 1)))
def test_varints_round_trip(values):
    buf = coding.pack_varints(values)
    out, used = coding.unpack_varints(buf + b"\x01", len(values))
    np.testing.assert_array_equal(out, values)
    assert used == len(buf)


def test_huffman_uses_many_lanes_for_big_streams():
    idx = laplace_indices(50_000)
    stream, meta = coding.encode_symbols(idx, alphabet=32, coder="huffman", bits=5)
    assert meta["lanes"] == coding.lanes_for(50_000) > 1
    np.testing.assert_array_equal(coding.decode_symbols(stream, meta, count=50_000), idx)


@pytest.mark.parametrize("coder", ["ans", "huffman"])
def test_truncated_stream_is_refused(coder):
    idx = laplace_indices(5000)
    stream, meta = coding.encode_symbols(idx, alphabet=32, coder=coder, bits=5)
    cut = stream[: len(stream) // 2]
    meta = dict(meta, coded_bits=8 * len(cut))
    with pytest.raises(FormatError, match="truncated|tampered"):
        coding.decode_symbols(cut, meta, count=5000)


@pytest.mark.parametrize("coder", ["ans", "huffman"])
def test_claiming_more_symbols_than_the_bytes_hold_is_refused(coder):
    idx = laplace_indices(1000)
    stream, meta = coding.encode_symbols(idx, alphabet=32, coder=coder, bits=5)
    with pytest.raises(FormatError):
        coding.decode_symbols(stream, dict(meta, symbols=10 ** 9), count=10 ** 9)


@settings(max_examples=150, deadline=None)
@given(coder=st.sampled_from(coding.CODERS), flips=st.lists(st.tuples(st.integers(0, 10 ** 6),
                                                                        st.integers(1, 255)),
                                                              min_size=1, max_size=4))
def test_tampered_streams_never_crash(coder, flips):
    idx = laplace_indices(3000, k=16, seed=1)
    stream, meta = coding.encode_symbols(idx, alphabet=16, coder=coder, bits=4)
    buf = bytearray(stream)
    for pos, xor in flips:
        buf[pos % len(buf)] ^= xor
    try:
        out = coding.decode_symbols(bytes(buf), meta, count=3000)
    except FormatError:
        return
    assert out.shape == (3000,) and out.min() >= 0 and out.max() < 16


def test_meta_lies_are_refused():
    stream, meta = coding.encode_symbols(np.arange(8) % 4, alphabet=4, coder="ans", bits=2)
    for bad in ({"coder": "zip"}, {"bits": 0}, {"alphabet": 99}, {"coded_bits": 3},
                {"table": 9}, {"table": -1}):
        with pytest.raises(FormatError):
            coding.decode_symbols(stream, {**meta, **bad}, count=8)


# --------------------------------------------------------------- C decoder == constriction
def _constriction_decode(words, counts_present, count):
    import constriction

    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = coder.decode(coding._ans_model(counts_present), count)
    except ValueError:
        return "invalid", None
    return ("empty" if coder.is_empty() else "left"), out


def _c_decode(words, counts_present, count):
    try:
        return "empty", coding._ans_decode_c(words, counts_present, None, count)
    except FormatError as exc:
        return ("invalid" if "last word" in str(exc) else "left"), None


needs_c = pytest.mark.skipif(__import__("dnnzip.kernels").kernels.load("ans") is None,
                             reason="no C compiler")


@needs_c
@settings(max_examples=150, deadline=None)
@given(alphabet=st.sampled_from([2, 3, 17, 256, 4096, 65536]), n=st.integers(1, 3000),
       skew=st.floats(0.01, 0.99), seed=st.integers(0, 2 ** 31))
def test_c_ans_decoder_matches_constriction_bit_for_bit(alphabet, n, skew, seed):
    rng = np.random.default_rng(seed)
    symbols = np.minimum(rng.geometric(skew, n) - 1, alphabet - 1)
    symbols = np.where(rng.random(n) < 0.05, rng.integers(0, alphabet, n), symbols)
    counts = np.bincount(symbols, minlength=alphabet)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        return
    assert np.array_equal(coding.ans_cdf(counts[present])[[0, -1]], [0, 1 << 24])
    stream, meta = coding.encode_symbols(symbols, alphabet=alphabet, coder="ans", bits=16)
    words = np.frombuffer(stream, dtype="<u4",
                          offset=coding.unpack_varints(stream, meta["table"])[1]).copy()
    ranks = coding._ans_decode_c(words, counts[present], None, n)
    assert np.array_equal(present[ranks], symbols)
    # damaged words and wrong counts: same verdict and, where both decode, the same symbols
    for damage in range(4):
        w = words.copy()
        if damage == 0:
            w = w[:-1]
        elif damage == 1:
            w[rng.integers(len(w))] ^= np.uint32(1 << int(rng.integers(32)))
        elif damage == 2:
            w = w[1:]
        ref, got = _constriction_decode(w, counts[present], n), _c_decode(w, counts[present], n)
        assert ref[0] == got[0]
        if got[1] is not None:
            assert np.array_equal(ref[1], got[1])


def test_ans_decodes_without_c(monkeypatch):
    from dnnzip import kernels

    symbols = np.random.default_rng(0).integers(0, 5, 2000)
    stream, meta = coding.encode_symbols(symbols, alphabet=5, coder="ans", bits=3)
    monkeypatch.setenv("DNNZIP_NO_C", "1")
    assert kernels.load("ans") is None and "DNNZIP_NO_C" in kernels.why("ans")
    assert coding._ans_decode_c(np.ones(3, dtype=np.uint32), np.array([1, 1]), None, 2) is None
    assert np.array_equal(coding.decode_symbols(stream, meta, count=2000), symbols)


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "false"])
def test_kernel_loader_falls_back_when_it_cannot_compile(tmp_path, monkeypatch, cc):
    from dnnzip import kernels

    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("DNNZIP_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", cc)
    assert kernels.load("ans") is None and kernels.why("ans")
    symbols = np.arange(300) % 7
    stream, meta = coding.encode_symbols(symbols, alphabet=7, coder="ans", bits=3)
    assert np.array_equal(coding.decode_symbols(stream, meta, count=300), symbols)
    assert not list(tmp_path.glob("*.so"))  # no half-built library left behind
