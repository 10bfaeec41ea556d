"""One row per iteration of a campaign: coverage, test errors and the height of its labels.

Row k is model k, trained on the frames labelled before iteration k: the fields of
:class:`uq_bias.campaign.explored.CoverageRow` (labels, explored and broken frames, coverage of
explored, all explored and labelled frames), then per test subset ``<s>_energy_rmse``
(eV/atom), ``<s>_forces_rmse`` (eV/A), ``<s>_atom_coverage`` and, where scored,
``<s>_stress_rmse`` (eV/A^3), and ``label_height``: how far up the surface the labels lie,

    label_height = median_{i < n_labelled} (E_i / N_i) - min_{test t} (E_t / N_t)    eV/atom

over the reference energies of the frames model k was trained on (in labelling order) and of
the test frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from ase import Atoms

from harness.case import Case
from harness.scoring import score_iterations

#: Row key suffix <- metric of :func:`uq_bias.campaign.uq.error_metrics` (or scoring's stress).
METRICS = {
    "energy_rmse": "energy_rmse_per_atom",
    "forces_rmse": "forces_rmse",
    "atom_coverage": "atom_coverage",
    "stress_rmse": "stress_rmse",
}


def flat_scores(scores: dict[str, dict]) -> dict[str, float]:
    """{subset: metrics} of one model -> {``<subset>_<key>``: value} (the module docstring)."""
    return {
        f"{subset}_{key}": metrics[name]
        for subset, metrics in scores.items()
        for key, name in METRICS.items()
        if name in metrics
    }


def label_heights(labelled: Sequence[Atoms], test_frames: Sequence[Atoms]) -> np.ndarray:
    """(L,) E_i / N_i - min_t E_t / N_t of the labelled frames, eV/atom."""
    lowest = min(a.get_potential_energy() / len(a) for a in test_frames)
    return np.array([a.get_potential_energy() / len(a) - lowest for a in labelled])


def rows_of(folder: Path, case: Case, frames: Sequence[Atoms], test_path: Path) -> list[dict]:
    """The rows of the campaign in ``folder`` (see the module docstring)."""
    from uq_bias.campaign.explored import coverage_by_iteration
    from uq_bias.campaign.state import CampaignState

    state = CampaignState(folder)
    scores, _ = score_iterations(folder, frames, test_path, case.test_set.subsets)
    heights = label_heights(state.labelled(), frames)
    coverage = coverage_by_iteration(state, case.cvs, sorted(scores), case.reference)
    return [
        {
            **asdict(c),
            **flat_scores(scores[c.iteration]),
            "label_height": float(np.median(heights[: c.n_labelled])),
        }
        for c in coverage
    ]
