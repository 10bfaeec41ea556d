"""Statistics of a training set that a fresh model starts from (:class:`DataStatistics`).

With n_{s,z} atoms of element z in structure s, N_s atoms and reference energy E_s:

    E0      = argmin_e sum_s (E_s - sum_z n_{s,z} e_z)^2     (least squares, minimum norm), eV
    shift   = mean_s (E_s - sum_z n_{s,z} E0_z) / N_s                                       eV
    scale   = sqrt(mean over atoms and x, y, z of F^2)                                      eV/A
    avg_num_neighbors = (number of directed edges within the cutoff) / (number of atoms)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from uq_bias.graph import atoms_to_graph
from uq_bias.training.build import DataStatistics
from uq_bias.training.labels import elements


def least_squares_e0(counts: np.ndarray, energies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E0 (Z,), residual per structure (S,)) for ``counts`` (S, Z) and ``energies`` (S,), eV.

    Minimum-norm least squares, so compositions that never vary still give finite E0.
    """
    e0, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return e0, energies - counts @ e0


def compute_statistics(frames: Sequence[Atoms], cutoff: float) -> DataStatistics:
    """:class:`DataStatistics` of labelled frames (labels in ``atoms.calc.results``)."""
    if not frames:
        raise ValueError("compute_statistics: no frames given")
    numbers = elements(frames)
    column = {z: k for k, z in enumerate(numbers)}
    counts = np.zeros((len(frames), len(numbers)))
    for s, atoms in enumerate(frames):
        for z in atoms.numbers:
            counts[s, column[int(z)]] += 1
    energies = np.array([a.calc.results["energy"] for a in frames], dtype=float)
    e0, residual = least_squares_e0(counts, energies)
    n_atoms = counts.sum(axis=1)
    forces = np.concatenate([np.asarray(a.calc.results["forces"]) for a in frames])
    scale = float(np.sqrt(np.mean(forces**2)))
    n_edges = sum(atoms_to_graph(a, cutoff).edge_index.shape[1] for a in frames)
    return DataStatistics(
        atomic_energies={z: float(e0[column[z]]) for z in numbers},
        avg_num_neighbors=float(max(n_edges / n_atoms.sum(), 1.0)),
        scale=scale if scale > 1e-8 else 1.0,
        shift=float(np.mean(residual / n_atoms)),
    )
