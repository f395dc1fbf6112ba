import importlib
import os
import stat

import pytest

import data_sim.files as files
from data_sim.files import atomic_dir, atomic_path, atomic_write


def test_written_file_gets_the_umask_mode_not_mkstemps_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        importlib.reload(files)  # the umask is read once, at import
        files.atomic_write(tmp_path / "a" / "out.txt", "hello")
    finally:
        os.umask(old)
        importlib.reload(files)
    out = tmp_path / "a" / "out.txt"
    assert out.read_text() == "hello"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert (tmp_path / "out.bin").read_bytes() == b"old"


def test_bytes_and_text(tmp_path):
    atomic_write(tmp_path / "b", b"\x00\x01")
    atomic_write(tmp_path / "t", "é")
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t").read_bytes() == "é".encode()


def test_a_folder_replaces_the_old_one_only_when_complete(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as staged:
        (staged / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["old.txt"]
    with atomic_dir(tmp_path / "model") as staged:
        (staged / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["new.txt"]
