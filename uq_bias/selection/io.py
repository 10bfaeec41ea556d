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


def write_frames(path: str | Path, frames: Sequence[Atoms]) -> Path:
    """Write ``frames`` as extended XYZ through a temporary file in the same directory, then
    ``os.replace``: readers see the old file or the complete new one."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {path.parent} does not exist")
    write_atomic(path, frames)
    return path


def load_features(path: str | Path) -> torch.Tensor:
    """A precomputed (n_pool, D) feature matrix from ``.pt`` (a tensor saved with torch.save,
    loaded with weights_only=True) or ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} does not exist")
    if path.suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(path, allow_pickle=False))
    if path.suffix == ".pt":
        value = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: expected one tensor saved with torch.save, got {type(value)}"
            )
        return value
    raise ValueError(f"features file {path}: expected a .pt or .npy file, got {path.suffix!r}")
