"""Fixtures shared by the uncertainty tests: tiny MACE members (untrained, different seeds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


@pytest.fixture(scope="session")
def cu_model():
    """A tiny float64 ScaleShiftMACE for Al/Cu (untrained, seed 0)."""
    from uq_bias.training.build import build_mace

    return build_mace([13, 29], cutoff=4.0, seed=0, dtype=torch.float64)


@pytest.fixture(scope="session")
def cu_members(cu_model):
    """Four tiny float64 ScaleShiftMACE models for Al/Cu that differ only in their seed."""
    from uq_bias.training.build import build_mace

    others = [build_mace([13, 29], cutoff=4.0, seed=s, dtype=torch.float64) for s in (1, 2, 3)]
    return [cu_model, *others]


def cu_cells(n: int, seed: int, amplitude: float = 0.05):
    """``n`` rattled 8-atom Cu/Al cells (two Al) labelled by ASE's EMT; ``amplitude`` in A."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
        atoms.numbers[rng.choice(8, size=2, replace=False)] = 13
        atoms.positions += rng.normal(scale=amplitude, size=atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="session")
def small_cu_frames():
    """Eight 8-atom rattled Cu/Al cells labelled by EMT (cheap to featurise)."""
    return cu_cells(8, seed=1)


@pytest.fixture(scope="session")
def make_cu_cells():
    """The :func:`cu_cells` factory, for tests that need their own frames."""
    return cu_cells
