"""Atomic writes leave the old file whole when writing fails, and no temporary file behind."""

from __future__ import annotations

import pytest

from uq_bias.atomic import atomic_path, write_bytes


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "file.json"
    write_bytes(path, b"old")
    with pytest.raises(TypeError):
        write_bytes(path, "not bytes")  # fails inside the write
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "labels.extxyz"
    path.write_text("complete old content")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "complete old content"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.extxyz"]


def test_a_new_file_gets_the_permissions_open_gives_and_a_replaced_one_keeps_its_own(tmp_path):
    """The reference is a file written by plain open() under the same umask; mkstemp's 0o600
    kept models and labels from the user's group."""
    import os
    import stat

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    new = tmp_path / "model.model"
    write_bytes(new, b"weights")
    assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    os.chmod(new, 0o640)
    write_bytes(new, b"new weights")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
