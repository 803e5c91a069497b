"""dnnzip.io: atomic writes keep what a plain write would give (content, permissions)."""
from __future__ import annotations

import os
import stat

import pytest

from dnnzip.io import atomic_json, atomic_write


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_file_gets_umask_permissions_not_mkstemp_0600(tmp_path, umask_022):
    p = tmp_path / "a.dnz"
    assert atomic_write(p, b"abc") == 3
    assert p.read_bytes() == b"abc"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    atomic_json(tmp_path / "m.json", {"b": 1, "a": 2})
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644


def test_existing_file_keeps_its_permissions(tmp_path, umask_022):
    p = tmp_path / "a.dnz"
    p.write_bytes(b"old")
    p.chmod(0o640)
    atomic_write(p, b"new")
    assert p.read_bytes() == b"new"
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "a.dnz"
    p.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.dnz"]
