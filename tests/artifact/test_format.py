"""The container reader, fed malformed and random files: FormatError or a valid model, always."""
import base64
import functools
import json
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn
from hypothesis import HealthCheck, given, settings, strategies as st

from dnnzip.artifact import pack, read_manifest, unpack
from dnnzip.artifact import format as fmt
from dnnzip.errors import FormatError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "artifact"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import join, split, template  # noqa: E402

CASES = json.loads((FIXTURES / "cases.json").read_text())


def with_manifest(data: bytes, edit, streams_edit=None) -> bytes:
    """Apply ``edit(manifest)`` (and ``streams_edit(dict name->bytes)``), re-checksummed; keeps
    the file's manifest form (plain version 1 or compressed version 2) whatever the edit did."""
    _, streams = fmt.parse_container(data, "fixture")
    streams = {k: bytes(v) for k, v in streams.items()}
    header, _ = split(data)
    manifest, compressed = fmt.manifest_from_metadata(header["__metadata__"], "fixture")
    if streams_edit:
        streams_edit(streams)
    edit(manifest)
    manifest["checksums"] = {k: zlib.crc32(v) for k, v in streams.items()}
    text = fmt.dumps(manifest)
    meta = {fmt.MANIFEST_KEY: text}
    if compressed:
        meta = {fmt.MANIFEST_KEY: fmt.dumps({"format": "dnz", "version": 2, "z": _z(text)})}
    new_header, body, offset = {"__metadata__": meta}, b"", 0
    for name in sorted(streams):
        new_header[name] = {"dtype": "U8", "shape": [len(streams[name])],
                            "data_offsets": [offset, offset + len(streams[name])]}
        body += streams[name]
        offset += len(streams[name])
    return join(new_header, body)


def test_valid_fixture_loads():
    model = unpack(FIXTURES / "valid.dnz", template=template())
    for k, v in template().state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_fixture_raises_format_error(name):
    assert (FIXTURES / name).stat().st_size < 5000
    with pytest.raises(FormatError, match=CASES[name]) as info:
        unpack(FIXTURES / name, template=template())
    assert name in str(info.value)  # names the file


def test_fixtures_cover_the_required_cases():
    required = {"truncated", "header_too_big", "offsets_past_eof", "overlapping", "trailing_bytes",
                "bad_json", "wrong_format", "future_version", "unknown_encoding", "size_mismatch",
                "coded_truncated", "index_out_of_range"}
    assert required <= {n[:-4] for n in CASES}


def test_same_content_same_bytes(tmp_path):
    a, b = tmp_path / "a.dnz", tmp_path / "b.dnz"
    model = template()
    pack(model, a, ref={"template": "t"}, meta={"z": 1, "a": [1, 2]})
    shuffled = torch.nn.Sequential(torch.nn.Linear(32, 8))
    shuffled.load_state_dict(dict(reversed(list(model.state_dict().items()))))
    pack(shuffled, b, ref={"template": "t"}, meta={"a": [1, 2], "z": 1})
    assert a.read_bytes() == b.read_bytes()


def test_manifest_is_readable_and_checked(tmp_path):
    path = tmp_path / "m.dnz"
    pack(template(), path, ref={"template": "t"}, meta={"recipe": "x"},
         encodings={"0.weight": ("codebook", {"coder": "ans"})})
    m = read_manifest(path)
    assert m["format"] == "dnz" and m["version"] == 2 and m["meta"] == {"recipe": "x"}
    entry = m["tensors"]["0.weight"]
    assert entry["encoding"] == "codebook" and entry["streams"] == ["0.weight/codebook",
                                                                    "0.weight/indices"]
    coded = entry["meta"]["indices"]
    assert coded["symbols"] == 256 and coded["coded_bits"] >= coded["entropy_bits"] > 0


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.dnz"
    pack(template(), path, ref={"template": "t"})
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(fmt.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        pack(template(), path, ref={"template": "t"}, meta={"other": True})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.dnz"]  # no temp file left


def test_unencodable_meta_writes_nothing(tmp_path):
    path = tmp_path / "x.dnz"
    with pytest.raises(Exception, match="JSON"):
        pack(template(), path, ref={"template": "t"}, meta={"bad": float("nan")})
    assert not path.exists()


@functools.lru_cache(maxsize=1)
def _variants():
    tmp = Path(tempfile.mkdtemp())
    model = template()
    out = {}
    for label, enc in [("raw", "raw"), ("ans", ("codebook", {"coder": "ans"})),
                       ("huffman", ("codebook", {"coder": "huffman"})),
                       ("sparse", ("sparse", {"gap_bits": 2, "values": "codebook"}))]:
        path = tmp / f"{label}.dnz"
        pack(model, path, ref={"template": "t"}, encodings={"0.weight": enc})
        out[label] = path.read_bytes()
        path.unlink()
    tmp.rmdir()
    return out


def _load_or_format_error(data: bytes, tmp: Path) -> None:
    path = tmp / "fuzz.dnz"
    path.write_bytes(data)
    try:
        model = unpack(path, template=template())
    except FormatError:
        return
    assert isinstance(model, torch.nn.Module)


mutation = st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.integers(0, 10 ** 6),
                     st.integers(1, 255))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["raw", "ans", "huffman", "sparse"]),
       mutations=st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_random_damage(tmp_path, kind, mutations):
    data = bytearray(_variants()[kind])
    for op, pos, val in mutations:
        pos %= len(data) + 1
        if op == "flip" and pos < len(data):
            data[pos] ^= val
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = bytes([val])
        if not data:
            break
    _load_or_format_error(bytes(data), tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["ans", "huffman", "sparse"]),
       flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(1, 255)), min_size=1,
                      max_size=3))
def test_fuzz_stream_damage_behind_valid_checksums(tmp_path, kind, flips):
    """Damage inside streams, checksums recomputed: the decoders themselves must hold."""
    def damage(streams):
        names = sorted(streams)
        for pos, xor in flips:
            name = names[pos % len(names)]
            if streams[name]:
                buf = bytearray(streams[name])
                buf[(pos // 7) % len(buf)] ^= xor
                streams[name] = bytes(buf)

    _load_or_format_error(with_manifest(_variants()[kind], lambda m: None, damage), tmp_path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["raw", "ans", "huffman", "sparse"]), path_pick=st.integers(0, 10 ** 6),
       value=st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40), st.text(max_size=4),
                       st.lists(st.integers(-3, 3), max_size=3), st.just({})))
def test_fuzz_manifest_values(tmp_path, kind, path_pick, value):
    """Replace one value anywhere in the manifest by something else of any type."""
    def edit(manifest):
        slots = []

        def walk(node):
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in list(items):
                slots.append((node, k))
                if isinstance(v, (dict, list)):
                    walk(v)
        walk(manifest)
        node, key = slots[path_pick % len(slots)]
        if key != "checksums":
            node[key] = value

    _load_or_format_error(with_manifest(_variants()[kind], edit), tmp_path)


def test_header_length_and_cap_are_checked_before_reading():
    with pytest.raises(FormatError, match="too short"):
        fmt.parse_container(b"\x01\x02", "'x'")
    big = (fmt.MAX_HEADER + 1).to_bytes(8, "little")
    with pytest.raises(FormatError, match="exceeds"):
        fmt.parse_container(big + b"{}", "'x'")


def test_crc_of_streams_is_recorded(tmp_path):
    path = tmp_path / "c.dnz"
    pack(template(), path, ref={"template": "t"})
    manifest, streams = fmt.read_container(path)
    assert manifest["checksums"] == {k: zlib.crc32(v) for k, v in streams.items()}


def test_small_file_cannot_claim_gigabytes_of_zeros(tmp_path):
    model = nn.Sequential(nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight.zero_()
    path = tmp_path / "z.dnz"
    pack(model, path, ref={"template": "t"}, encodings={"0.weight": "sparse"})
    bomb = with_manifest(path.read_bytes(),
                         lambda m: m["tensors"]["0.weight"].update(shape=[2 ** 15, 2 ** 14]))
    path.write_bytes(bomb)  # 2 GiB of float32 zeros claimed by a ~1 KB file
    with pytest.raises(FormatError, match="refusing to allocate"):
        read_manifest(path)


# --------------------------------------------------------------- version 2: compressed manifest
def _z(text: str | bytes) -> str:
    return base64.b85encode(zlib.compress(text.encode() if isinstance(text, str) else text,
                                          9)).decode()


def _header(path):
    data = Path(path).read_bytes()
    return split(data)


def _rewrite(path, meta):
    header, body = _header(path)
    header["__metadata__"] = meta
    Path(path).write_bytes(join(header, body))


def _stub(path):
    return json.loads(_header(path)[0]["__metadata__"][fmt.MANIFEST_KEY])


def test_v2_manifest_is_compressed_and_much_smaller(tmp_path):
    path = tmp_path / "v2.dnz"
    pack(template(), path, ref={"template": "t"}, meta={"recipe": "x" * 20})
    meta = _header(path)[0]["__metadata__"]
    stub = _stub(path)
    assert set(meta) == {"dnnzip"} and set(stub) == {"format", "version", "z"}
    assert stub["version"] == 2
    manifest, compressed = fmt.manifest_from_metadata(meta, "'x'")
    assert compressed and manifest == read_manifest(path)
    assert len(meta["dnnzip"]) < 0.6 * len(json.dumps(fmt.dumps(manifest)))


def test_old_readers_ask_for_an_upgrade(tmp_path, monkeypatch):
    path = tmp_path / "v2.dnz"
    pack(template(), path, ref={"template": "t"})
    monkeypatch.setattr(fmt, "VERSION", 1)
    with pytest.raises(FormatError, match="upgrade"):  # what a version-1 reader checks first
        fmt.check_manifest(_stub(path), {}, "'x'")
    with pytest.raises(FormatError, match=r"newer than this dnnzip supports \(1\); upgrade"):
        read_manifest(path)


def _stub_edit(**fields):
    def edit(stub):
        stub.update(fields)
        return stub
    return edit


def _v1_manifest(version):
    return fmt.dumps(dict(read_manifest(FIXTURES / "valid.dnz"), version=version))


@pytest.mark.parametrize("damage, message", [
    (lambda s: dict(s, z=s["z"][:-7]), "inflate|truncated"),
    (lambda s: dict(s, z='\\' + s["z"][1:]), "base85"),
    (lambda s: dict(s, z=_z(zlib.compress(b"{}")[:0] + b'{"a":1}') + "00000"), "inflate|trailing"),
    (lambda s: dict(s, z=base64.b85encode(zlib.compress(b'{"a":1}') + b"xx").decode()), "trailing"),
    (lambda s: dict(s, z=_z(b"\xff\xfe")), "UTF-8"),
    (lambda s: dict(s, version=3), "newer.*upgrade"),
    (lambda s: dict(s, version=1), "stub"),
    (lambda s: dict(s, version=True), "stub"),
    (lambda s: dict(s, extra=1), "stub"),
    (lambda s: dict(s, z=7), "stub"),
    (lambda s: json.loads(_v1_manifest(2)), "upgrade"),
    (lambda s: dict(s, z=_z(_v1_manifest(1))), "says version 1"),
    (lambda s: dict(s, z=_z("[1, 2]")), "must be a JSON object"),
])
def test_compressed_manifest_damage_is_a_format_error(tmp_path, damage, message):
    path = tmp_path / "d.dnz"
    pack(template(), path, ref={"template": "t"})
    _rewrite(path, {"dnnzip": json.dumps(damage(_stub(path)))})
    with pytest.raises(FormatError, match=message):
        unpack(path, template=template())


def test_inflated_manifest_is_capped(tmp_path, monkeypatch):
    path = tmp_path / "bomb.dnz"
    pack(template(), path, ref={"template": "t"})
    _rewrite(path, {"dnnzip": json.dumps(dict(_stub(path), z=_z(b" " * (1 << 20))))})
    monkeypatch.setattr(fmt, "MAX_MANIFEST", 1 << 16)
    with pytest.raises(FormatError, match="inflates to more than"):
        read_manifest(path)


def test_version_1_files_stay_readable(tmp_path, monkeypatch):
    path = tmp_path / "v1.dnz"
    monkeypatch.setattr(fmt, "VERSION", 1)  # what dnnzip wrote before version 2
    pack(template(), path, ref={"template": "t"}, meta={"old": True})
    monkeypatch.undo()
    plain = json.loads(split(path.read_bytes())[0]["__metadata__"][fmt.MANIFEST_KEY])
    assert plain["version"] == 1 and "tensors" in plain
    assert read_manifest(path) == plain
    model = unpack(path, template=template())
    for k, v in template().state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    path.write_bytes(with_manifest(path.read_bytes(), lambda m: m["meta"].update(edited=True)))
    assert read_manifest(path)["meta"] == {"old": True, "edited": True}
