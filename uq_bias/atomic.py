"""Atomic file writes: readers see the old file or the complete new one, never half of one.

Write to a temporary file in the destination's folder, flush it to disk, then ``os.replace``
it onto the destination (atomic on POSIX within one file system). On any error the temporary
file is removed and the destination is left as it was.

The writers every part of the package uses: :func:`write_bytes`, :func:`write_text`,
:func:`write_json` (strict JSON: NaN and inf are written as null, numpy values as numbers) and
:func:`write_frames` (extended XYZ with the frames' calculator results).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, move it onto ``path``.

    The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _mode_for(path: Path) -> int:
    """The permissions ``path`` gets: those of the file it replaces, else what ``open`` would
    give a new file (0o666 less the umask). mkstemp makes its file 0o600, which kept a model or
    a label file from the user's group."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode())


def _plain(value):
    """``value`` as strict-JSON data: numpy scalars and arrays as numbers and lists, NaN and
    inf as None."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy, torch
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented, strict JSON atomically (NaN and inf become null)."""
    write_text(path, json.dumps(_plain(data), indent=2, allow_nan=False) + "\n")


def write_frames(path: str | Path, frames: Sequence) -> None:
    """Write ``ase.Atoms`` frames (with their calculator results) as extended XYZ, atomically."""
    import ase.io

    with atomic_path(path) as tmp:
        ase.io.write(tmp, list(frames), format="extxyz")
