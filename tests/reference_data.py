"""Labelled reference data for tests, from real reference methods (ASE's EMT, GFN2-xTB)."""

from __future__ import annotations

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def label(atoms, calc):
    """Label a copy of ``atoms`` with ``calc``; results frozen in a SinglePointCalculator."""
    atoms = atoms.copy()
    atoms.calc = calc
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def rattled_cu_frames(n: int, seed: int = 0, amplitude: float = 0.08, size=(2, 2, 2)):
    """``n`` rattled and strained fcc Cu/Al cells labelled by ASE's EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * size
        atoms.numbers[rng.choice(len(atoms), size=len(atoms) // 4, replace=False)] = 13
        strain = np.eye(3) + rng.normal(scale=0.01, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(scale=amplitude, size=atoms.positions.shape)
        frames.append(label(atoms, EMT()))
    return frames


def side_of_bond(atoms, i: int, j: int, bond: float = 1.7) -> np.ndarray:
    """Indices of the atoms on j's side of the bond i-j: the connected component holding j
    (scipy) of the graph of atoms closer than ``bond`` A, with the bond i-j cut."""
    from scipy.sparse.csgraph import connected_components

    near = atoms.get_all_distances() < bond
    np.fill_diagonal(near, False)
    near[i, j] = near[j, i] = False
    _, component = connected_components(near, directed=False)
    return np.flatnonzero(component == component[j])
