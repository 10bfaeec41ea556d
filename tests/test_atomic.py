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
