"""One reader of structure files for every entry point (CLI commands, campaign, Python API).

:func:`read_structures` reads every frame of a file ASE can read and, for any way the file can
be bad, raises an error that names the file, what it was read as (``what``: "start structures",
"training data", ...), the format tried and ASE's own reason:

    missing                 FileNotFoundError  "... does not exist"
    a folder                StructureFileError "... is a folder, not a file"
    empty (0 bytes)         StructureFileError "... is empty"
    unknown extension       StructureFileError "... ASE knows no format for it (...)"
    binary for a text format StructureFileError "... is not a text file ..."
    garbage for the format  StructureFileError "... ASE could not read it as <format>: <reason>"
    no frame in it          StructureFileError "... holds no structure"
    atoms on top of another StructureFileError "..., frame k: atoms i (O) and j (O) are 0.000 A
                            apart ..." (also empty frames, NaN positions, a flat periodic cell)

:class:`StructureFileError` is a ``ValueError``, so callers that catch ``ValueError`` keep
working; the ``uq-bias`` commands turn it into a one-line message and exit status 2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

__all__ = ["StructureFileError", "check_disjoint", "read_structures"]


class StructureFileError(ValueError):
    """A structure file that exists but cannot be read (see the module docstring)."""


def _format(path: Path, what: str, format: str | None) -> str:
    """The ASE format name of ``path`` (``format`` if given, else ASE's guess)."""
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    if format is not None:
        if format not in ioformats:
            raise StructureFileError(
                f"{what} {str(path)!r}: ASE knows no format {format!r}; see `ase info --formats`"
            )
        return format
    hint = "use a file ending ASE knows, such as .xyz, .extxyz, .traj, .cif, .vasp or .pdb"
    try:
        fmt = filetype(str(path), guess=True)
    except UnknownFileTypeError as err:
        raise StructureFileError(
            f"{what} {str(path)!r}: ASE knows no format for it ({err}); {hint}"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise StructureFileError(f"{what} {str(path)!r}: cannot be opened ({err})") from err
    if fmt not in ioformats:
        raise StructureFileError(
            f"{what} {str(path)!r}: ASE knows no format {fmt!r} (from the file name); {hint}"
        )
    return fmt


def read_structures(
    path: str | Path, what: str = "structure file", *, format: str | None = None
) -> list[Atoms]:
    """Every frame of the structure file ``path`` (any format ASE reads; labels kept).

    Args:
        path: the file.
        what: what the file is for, named in the error messages ("start structures", ...).
        format: an ASE format name; None lets ASE guess from the name and content.

    Raises:
        FileNotFoundError: the file does not exist.
        StructureFileError: the file exists but holds no readable structure (see module doc).
    """
    import ase.io
    from ase.io.formats import ioformats

    path = Path(path)
    if path.is_dir():
        raise StructureFileError(f"{what} {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise StructureFileError(f"{what} {str(path)!r} is empty (0 bytes)")
    fmt = _format(path, what, format)
    try:
        frames = ase.io.read(path, index=":", format=fmt)
    except UnicodeDecodeError as err:
        raise StructureFileError(
            f"{what} {str(path)!r} is not a text file (a binary file?), and ASE read it as "
            f"{fmt} ({ioformats[fmt].description}), a text format ({err.reason} at byte "
            f"{err.start})"
        ) from err
    except Exception as err:  # ASE raises many types for a bad file; all mean "not readable"
        reason = str(err).strip() or type(err).__name__
        raise StructureFileError(
            f"{what} {str(path)!r}: ASE could not read it as {fmt} "
            f"({ioformats[fmt].description}): {type(err).__name__}: {reason}"
        ) from err
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise StructureFileError(f"{what} {str(path)!r} holds no structure")
    from uq_bias.graph import check_frames

    try:  # non-finite numbers, a flat periodic cell, atoms on top of another
        check_frames(frames, f"{what} {str(path)!r}", contacts=True)
    except ValueError as err:
        raise StructureFileError(str(err)) from None
    return frames


def frame_id(atoms: Atoms) -> str:
    """A content hash of a structure (numbers, positions, cell, pbc): ``f-`` + 16 hex digits."""
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(atoms.cell.array, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(atoms.pbc, dtype=np.int8).tobytes())
    return "f-" + digest.hexdigest()[:16]


def check_disjoint(train: Sequence[Atoms], valid: Sequence[Atoms]) -> None:
    """ValueError if a validation frame is also a training frame (same numbers, positions, cell
    and pbc, see :func:`frame_id`): validation stops training early and picks the best epoch,
    and calibration scales the uncertainty to the errors on frames the model has not seen; a
    frame it was trained or fitted on tells it nothing about those."""
    seen = {frame_id(a): k for k, a in enumerate(train)}
    both = [(seen[i], k) for k, a in enumerate(valid) if (i := frame_id(a)) in seen]
    if both:
        pairs = ", ".join(f"validation frame {v} = training frame {t}" for t, v in both[:3])
        raise ValueError(
            f"{len(both)} of {len(valid)} validation frames are also training frames ({pairs}"
            f"{', ...' if len(both) > 3 else ''}); keep the validation frames apart from the "
            "training frames"
        )
