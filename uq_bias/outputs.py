"""Checks of an output path a command will write, made before anything is read or computed.

Each raises one error naming the flag (``what``), the path, what was wrong and what to give
instead:

    check_xyz_name      ValueError         frames go out as extended XYZ: the name must end in
                                           .xyz or .extxyz, else ASE cannot read them back
    check_not_input     ValueError         the output is one of the input files (same file on
                                           disk), which writing would replace
    check_writable      NotADirectoryError a folder on the way is a file
                        PermissionError    the folder it goes in cannot be written
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["XYZ_SUFFIXES", "check_not_input", "check_writable", "check_xyz_name"]

#: File endings ASE reads back as extended XYZ (what the frame writers write).
XYZ_SUFFIXES = (".xyz", ".extxyz")


def check_xyz_name(path: str | Path, what: str) -> Path:
    """``path`` ends in .xyz or .extxyz: frames are written as extended XYZ, and a file named
    ``run.traj`` (or .pdb, .cif) holding extended XYZ cannot be read back by its name."""
    path = Path(path)
    if path.suffix.lower() not in XYZ_SUFFIXES:
        got = repr(path.suffix) if path.suffix else "no ending"
        raise ValueError(
            f"{what} {str(path)!r}: frames are written as extended XYZ, so the name must end in "
            f".xyz or .extxyz (got {got}); give e.g. {str(path.with_suffix('.extxyz'))!r}"
        )
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file on disk (a missing file is no input to replace)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(
    path: str | Path, what: str, inputs: Iterable[tuple[str | Path | None, str, str]], result: str
) -> Path:
    """``path`` (the output ``what``, e.g. "--out") is none of the ``inputs``, each given as
    (path or None, its flag, what it holds: "pool"): writing ``result`` ("the selection") there
    would replace that input. Same file on disk (links included), not same spelling."""
    path = Path(path)
    for given, flag, noun in inputs:
        if given is not None and _same_file(path, Path(given)):
            raise ValueError(
                f"{what} {str(path)!r} is the {noun} file ({flag}); writing {result} there would "
                f"replace your {noun}: give another file name"
            )
    return path


def check_writable(path: str | Path, what: str, *, folder: bool = False) -> Path:
    """``path`` (a file, or a folder if ``folder``) can be created or replaced: the nearest
    existing folder on its way is a folder (not a file) that this process may write in.
    Missing folders in between are fine (the writers create them)."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind, want = ("file", "folder") if folder else ("folder", "file name")
        raise (NotADirectoryError if folder else IsADirectoryError)(
            f"{what} {str(path)!r} is a {kind}; give a {want}"
        )
    parent = path if folder and path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(
            f"{what} {str(path)!r}: {str(parent)!r} is a file, not a folder; give a path in a "
            "folder"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{what} {str(path)!r}: no permission to write in the folder {str(parent)!r}; give "
            "a path in a folder you can write to"
        )
    return path
