"""Every encoding round-trips (bit for bit where lossless) and refuses bad input by name."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from dnnzip.artifact import encodings
from dnnzip.artifact.encodings import get_encoding
from dnnzip.artifact.sparse import from_gaps, to_gaps
from dnnzip.errors import ConfigError, DataError, FormatError

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12)
floats = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)


def round_trip(name, arr, dtype, **opts):
    streams, meta = get_encoding(name).encode(arr, **opts)
    assert set(streams) == get_encoding(name).stream_names(meta)
    out = get_encoding(name).decode(streams, meta, list(arr.shape), dtype)
    again = get_encoding(name).encode(arr.copy(), **opts)
    assert again == (streams, meta)  # same content, same bytes
    return out, streams


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(["float32", "float64", "float16", "int8", "uint8", "int32",
                              "int64", "bool"]), data=st.data())
def test_raw_is_bit_exact_for_every_dtype(dtype, data):
    arr = data.draw(hnp.arrays(np.dtype(encodings.DTYPES[dtype]), shapes))
    out, _ = round_trip("raw", arr, dtype)
    assert out.dtype == arr.dtype and out.tobytes() == arr.tobytes()


@settings(max_examples=40, deadline=None)
@given(arr=hnp.arrays(np.float32, shapes, elements=st.sampled_from([-0.5, -0.0, 0.0, 0.125, 3.0])),
       coder=st.sampled_from(["ans", "huffman", "none"]))
def test_codebook_is_bit_exact(arr, coder):
    out, _ = round_trip("codebook", arr, "float32", coder=coder)
    assert out.tobytes() == arr.tobytes()  # -0.0 and 0.0 stay distinct


@settings(max_examples=40, deadline=None)
@given(arr=hnp.arrays(np.float32, shapes, elements=st.one_of(st.just(0.0), floats)),
       gap_bits=st.integers(1, 9), coder=st.sampled_from(["ans", "huffman", "none"]),
       values=st.sampled_from(["raw", "fp16"]))
def test_sparse_round_trip(arr, gap_bits, coder, values):
    if values == "fp16":
        arr = arr.astype(np.float16).astype(np.float32)
    out, _ = round_trip("sparse", arr, "float32", gap_bits=gap_bits, coder=coder, values=values)
    assert out.tobytes() == arr.tobytes()


@settings(max_examples=25, deadline=None)
@given(arr=hnp.arrays(np.float32, st.integers(0, 400),
                      elements=st.sampled_from([0.0, 0.0, 0.0, -1.5, 0.25, 2.0])),
       coder=st.sampled_from(["ans", "huffman"]))
def test_sparse_with_codebook_values(arr, coder):
    out, _ = round_trip("sparse", arr, "float32", gap_bits=3, coder=coder, values="codebook")
    assert out.tobytes() == arr.tobytes()


def test_sparse_gaps_use_fillers_past_the_max_gap():
    flat = np.zeros(40, dtype=np.float32)
    flat[[0, 1, 30]] = 1.0
    gaps, where = to_gaps(flat, gap_bits=3)  # max gap 8: 30 - 1 = 29 -> 8 + 8 + 8 + 5
    assert gaps.tolist() == [1, 1, 8, 8, 8, 5]
    assert where.tolist() == [0, 1, -1, -1, -1, 30]
    assert from_gaps(gaps, 40).tolist() == [0, 1, 9, 17, 25, 30]
    with pytest.raises(FormatError, match="past"):
        from_gaps(gaps, 30)


def test_sparse_beats_dense_on_a_pruned_tensor():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 64)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    sparse = sum(map(len, get_encoding("sparse").encode(w)[0].values()))
    assert sparse < 0.2 * w.nbytes


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 8), data=st.data())
def test_bitpack_round_trip(bits, data):
    arr = data.draw(hnp.arrays(np.uint8, shapes, elements=st.integers(0, (1 << bits) - 1)))
    out, streams = round_trip("bitpack", arr, "uint8", bits=bits)
    np.testing.assert_array_equal(out, arr)
    assert len(streams["data"]) == (arr.size * bits + 7) // 8


@settings(max_examples=30, deadline=None)
@given(arr=hnp.arrays(np.float32, shapes, elements=floats), per_channel=st.booleans(),
       symmetric=st.booleans())
def test_int8_error_is_within_half_a_step(arr, per_channel, symmetric):
    out, streams = round_trip("int8", arr, "float32", per_channel=per_channel, symmetric=symmetric)
    scale = np.frombuffer(streams["scale"], dtype="<f4")
    rows = arr.reshape(len(scale), -1) if arr.size else arr.reshape(0)
    err = np.abs(out.reshape(rows.shape) - rows) if arr.size else np.zeros((1, 1))
    step = scale[:, None] if arr.size else 1.0
    assert (err <= 0.5001 * step + 1e-6).all()
    assert out.dtype == np.float32 and out.shape == arr.shape


def test_int8_keeps_zero_exact():
    arr = np.array([[0.0, 0.3, 1.7], [-2.0, 0.0, 0.1]], dtype=np.float32)
    out, _ = round_trip("int8", arr, "float32")
    assert out[0, 0] == 0 and out[1, 1] == 0


def test_fp16_round_trip_and_overflow():
    arr = np.array([0.5, -2.0, 1e-3], dtype=np.float32)
    out, _ = round_trip("fp16", arr, "float32")
    np.testing.assert_array_equal(out, arr.astype(np.float16).astype(np.float32))
    with pytest.raises(DataError, match="float16 range"):
        get_encoding("fp16").encode(np.array([1e6], dtype=np.float32))


def test_bad_input_is_named():
    with pytest.raises(DataError, match="distinct values"):
        get_encoding("codebook").encode(np.arange(20, dtype=np.float32), bits=4)
    with pytest.raises(DataError, match=r"\[0, 4\)"):
        get_encoding("bitpack").encode(np.array([0, 5], dtype=np.uint8), bits=2)
    with pytest.raises(ConfigError, match="'bits'"):
        get_encoding("bitpack").encode(np.array([0], dtype=np.uint8), bits=9)
    with pytest.raises(ConfigError, match="no option"):
        get_encoding("raw").encode(np.zeros(2, np.float32), level=3)
    with pytest.raises(ConfigError, match="coder"):
        get_encoding("codebook").encode(np.zeros(2, np.float32), coder="zip")
    with pytest.raises(ConfigError, match="unknown encoding"):
        get_encoding("zstd")


def test_custom_encoding_plugs_in():
    @encodings.encoding("test.negate")
    class Negate:
        def encode(self, array, **opts):
            return {"data": (-array).tobytes()}, {}

        def stream_names(self, meta):
            return {"data"}

        def decode(self, streams, meta, shape, dtype):
            return -np.frombuffer(streams["data"], dtype=np.float32).reshape(shape)

    assert "test.negate" in encodings.names()
    out, _ = round_trip("test.negate", np.array([1.0, -2.0], np.float32), "float32")
    np.testing.assert_array_equal(out, [1.0, -2.0])
