"""Deep ensembles: K members trained on the same data with different seeds.

All members share the cutoff, the elements and (for fresh models) the data statistics, so that
they can share one graph at prediction time; only the initial weights and the order of the
training batches differ (member k uses seed ``seed + k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ase import Atoms

from uq_bias.training.build import ModelOptions
from uq_bias.training.labels import LabelKeys
from uq_bias.training.statistics import compute_statistics
from uq_bias.training.train import FitOptions, _frames, train


def train_ensemble(
    train_data: str | Path | Sequence[Atoms],
    valid_data: str | Path | Sequence[Atoms],
    out_dir: str | Path,
    n_members: int = 4,
    *,
    cutoff: float = ModelOptions.cutoff,
    keys: LabelKeys | None = None,
    options: FitOptions | None = None,
    **kwargs,
) -> list[Path]:
    """Train ``n_members`` MACE models and return their paths ``out_dir/member_<k>.model``.

    ``kwargs`` go to :func:`uq_bias.training.train` (``init``, ``preset``, ``dtype``,
    ``trainer_options``, ...). Member k uses seed ``options.seed + k``.
    """
    keys, options = keys or LabelKeys(), options or FitOptions()
    if n_members < 1:
        raise ValueError(f"an ensemble needs at least one member, got n_members={n_members}")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"the output directory {str(out_dir)!r} does not exist")
    train_frames = _frames(train_data, "training", keys)
    valid_frames = _frames(valid_data, "validation", keys)
    if kwargs.get("init") is None and kwargs.get("statistics") is None:
        kwargs["statistics"] = compute_statistics(train_frames, cutoff)
    paths = []
    for k in range(n_members):
        member = replace(options, seed=options.seed + k)
        path = out_dir / f"member_{k}.model"
        paths.append(
            train(train_frames, valid_frames, path, cutoff=cutoff, options=member, **kwargs)
        )
    return paths
