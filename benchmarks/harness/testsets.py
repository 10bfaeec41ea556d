"""Held-out test sets, made once and cached by the content hash of what they hold.

The cache key of a spec (a dataclass of everything that decides the frames: temperatures,
counts, seeds, ...) is

    key(spec) = sha1(json.dumps(asdict(spec), sort_keys=True))[:10]   (hex digits)

so a change to any field makes a new file, ``<cache>/<name>_<key>.extxyz``, and two sets are
never mixed; a file is written atomically, so a killed run never leaves half a set behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ase import Atoms

from harness.case import TestSet

#: Outside the repository: test sets are data, not code.
DEFAULT_CACHE = Path("~/.cache/uq_bias").expanduser()


def content_key(spec) -> str:
    """The formula of the module docstring; ``spec`` must be a dataclass instance."""
    if not dataclasses.is_dataclass(spec) or isinstance(spec, type):
        raise TypeError(f"a test-set spec must be a dataclass instance, got {type(spec).__name__}")
    text = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def cache_path(name: str, spec, cache: Path = DEFAULT_CACHE) -> Path:
    return Path(cache).expanduser() / f"{name}_{content_key(spec)}.extxyz"


def load_or_make(
    name: str, spec, make: Callable, cache: Path = DEFAULT_CACHE, say: Callable = print
) -> tuple[list[Atoms], Path]:
    """The cached frames of ``spec`` and their path; made by ``make(spec, say)`` and written on
    first use."""
    from uq_bias.campaign.state import read_frames, write_frames

    path = cache_path(name, spec, cache)
    if path.is_file():
        return read_frames(path), path
    say(f"test set: generating {path} (once)")
    frames = make(spec, say)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_frames(path, frames)
    return read_frames(path), path


def load(test_set: TestSet, cache: Path = DEFAULT_CACHE) -> tuple[list[Atoms], Path]:
    """:func:`load_or_make` of a case's :class:`harness.case.TestSet`."""
    return load_or_make(test_set.name, test_set.spec, test_set.make, cache)
