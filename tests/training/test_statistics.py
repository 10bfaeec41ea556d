"""Data statistics against independent computations (normal equations, ASE's neighbour list)."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list

from uq_bias.training.statistics import compute_statistics


def _frames():
    rng = np.random.default_rng(5)
    frames = []
    for n_al in range(5):  # compositions vary, so E0 is determined
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
        atoms.numbers[rng.choice(len(atoms), n_al, replace=False)] = 13
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def test_statistics_match_independent_computations():
    frames = _frames()
    stats = compute_statistics(frames, cutoff=3.0)
    counts = np.array([[np.sum(a.numbers == 13), np.sum(a.numbers == 29)] for a in frames])
    energies = np.array([a.get_potential_energy() for a in frames])
    e0 = np.linalg.solve(counts.T @ counts, counts.T @ energies)  # normal equations
    np.testing.assert_allclose(
        [stats.atomic_energies[13], stats.atomic_energies[29]], e0, rtol=0, atol=1e-9
    )
    per_atom = (energies - counts @ e0) / counts.sum(1)
    np.testing.assert_allclose(stats.shift, per_atom.mean(), rtol=0, atol=1e-10)
    n_edges = sum(len(neighbor_list("i", a, 3.0)) for a in frames)
    n_atoms = sum(len(a) for a in frames)
    np.testing.assert_allclose(stats.avg_num_neighbors, n_edges / n_atoms, rtol=1e-12)
    forces = np.concatenate([a.get_forces() for a in frames])
    np.testing.assert_allclose(stats.scale, np.linalg.norm(forces) / np.sqrt(forces.size))
