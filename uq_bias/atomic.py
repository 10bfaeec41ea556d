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
import secrets
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
    tmp = _new_file(path)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _new_file(path: Path) -> str:
    """A new, empty temporary file beside ``path``, created with mode 0o666 so that the umask
    sets its permissions as for any file ``open`` creates (``mkstemp`` gives 0o600, which kept
    models and labels from the user's group)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {str(path)!r}")


def _keep_mode(path: Path, tmp: str) -> None:
    """Give ``tmp`` the permissions of the file it replaces, where there is one (best effort:
    some file systems refuse chmod)."""
    try:
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    except OSError:
        pass


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
