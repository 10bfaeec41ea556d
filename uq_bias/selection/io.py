"""Selected frames on disk: annotate them with their selection and write extended XYZ atomically.

Each written frame carries, in ``atoms.info``:

    selection_index   int    its index in the pool file
    selection_rank    int    0 for the first pick
    selection_score   float  the method's score at pick time (see ``Selection``)
    selection_method  str    maxdet, maxdist, lcmd or random
    selection_filled  bool   True if it came from the fill-up rule
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms

from uq_bias.atomic import write_frames as write_atomic
from uq_bias.outputs import check_writable
from uq_bias.selection.result import Selection


def annotate(frames: Sequence[Atoms], selection: Selection) -> list[Atoms]:
    """Copies of the selected ``frames`` (in pick order) with the ``selection_*`` info keys.

    Calculator results (energies, forces) of the pool frames are kept on the copies.
    """
    out = []
    n_greedy = len(selection.indices) - selection.n_filled
    for rank, (index, score) in enumerate(zip(selection.indices, selection.scores)):
        atoms = frames[index].copy()
        if frames[index].calc is not None:
            atoms.calc = frames[index].calc
        atoms.info.update(
            selection_index=int(index),
            selection_rank=rank,
            selection_score=float(score),
            selection_method=selection.method,
            selection_filled=rank >= n_greedy,
        )
        out.append(atoms)
    return out


def check_output(path: str | Path, what: str = "output") -> Path:
    """``path`` can be written as a file: its folder exists (and is a folder this process may
    write in) and it is not a folder itself."""
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(
            f"{what} {str(path)!r}: its folder {str(path.parent)!r} does not exist"
        )
    return check_writable(path, what)


def write_frames(path: str | Path, frames: Sequence[Atoms]) -> Path:
    """Write ``frames`` as extended XYZ through a temporary file in the same directory, then
    ``os.replace``: readers see the old file or the complete new one."""
    path = check_output(path)
    write_atomic(path, frames)
    return path


def load_features(path: str | Path) -> torch.Tensor:
    """A precomputed (n_pool, D) feature matrix from ``.pt`` (a tensor saved with torch.save,
    loaded with weights_only=True) or ``.npy`` (numpy.save, loaded without pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} does not exist")
    if path.suffix not in (".pt", ".npy"):
        raise ValueError(f"features file {path}: expected a .pt or .npy file, got {path.suffix!r}")
    value = _read_npy(path) if path.suffix == ".npy" else _read_pt(path)
    if not isinstance(value, torch.Tensor) or value.ndim != 2:
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value)
        raise ValueError(f"features file {path}: expected an (n_pool, D) tensor, got {got}")
    return value


def _read_pt(path: Path):
    import pickle
    import zipfile

    if not zipfile.is_zipfile(path):  # what torch.save writes
        raise ValueError(f"features file {path}: not a torch.save file (zip format, torch >= 1.6)")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"features file {path}: it holds a Python object other than a tensor (it is loaded "
            "with weights_only=True, which runs no pickled code); save a torch.Tensor"
        ) from err
    except (RuntimeError, KeyError, EOFError) as err:
        raise ValueError(f"features file {path}: a damaged torch.save file ({err})") from err


def _read_npy(path: Path) -> torch.Tensor:
    import numpy as np

    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except (ValueError, TypeError, OSError, EOFError) as err:
        raise ValueError(
            f"features file {path}: not a numpy.save file of a number array ({err})"
        ) from err
