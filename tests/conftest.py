"""Shared fixtures: dtypes, seeds, real reference data (EMT, GFN2-xTB) and tiny MACE models."""

from __future__ import annotations

import os

# Tiny models are latency-bound: one thread per process is fastest, and the process-pool and
# Dask workers that tests start inherit it instead of oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy  # noqa: E402

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from reference_data import label, rattled_cu_frames  # noqa: F401  (re-exported for tests)

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


@pytest.fixture(params=[torch.float64, torch.float32], ids=["float64", "float32"])
def dtype(request):
    """Run a test in both dtypes; never changes the global default."""
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def cu_frames():
    return rattled_cu_frames(12)


@pytest.fixture(scope="session")
def _tiny_mace_template():
    from uq_bias.training.build import build_mace

    return build_mace([1, 6, 8, 13, 29], cutoff=4.0, preset="tiny", dtype=torch.float64)


@pytest.fixture
def tiny_mace(_tiny_mace_template):
    """A fresh tiny ScaleShiftMACE (float64) for H, C, O, Al, Cu; a copy per test, because
    MACECalculator and training change the modules they are given."""
    return copy.deepcopy(_tiny_mace_template)


@pytest.fixture
def methanol():
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture
def cu_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.numbers[::5] = 13
    atoms.rattle(0.05, seed=4)
    return atoms


@pytest.fixture(scope="session")
def cu8_frames():
    """Eight rattled, strained 8-atom Cu/Al cells labelled by EMT (for fitted MD models)."""
    return rattled_cu_frames(8, seed=1, size=(2, 1, 1), amplitude=0.1)


@pytest.fixture(scope="session")
def untrained_ensemble():
    """Two untrained tiny MACE models for H, C, O, Al, Cu (seeds 1, 2) as an ensemble."""
    from uq_bias.models.mace import MACEAdapter
    from uq_bias.training.build import build_mace
    from uq_bias.uncertainty.ensemble import Ensemble

    elements = [1, 6, 8, 13, 29]
    return Ensemble([MACEAdapter(build_mace(elements, cutoff=4.0, seed=s)) for s in (1, 2)])


@pytest.fixture(scope="session")
def fitted_ensemble(cu8_frames):
    """Three tiny Cu/Al MACE models whose readouts are least-squares fitted to EMT (a crystal
    that holds together under MD), differing in their random hidden layers."""
    from readout_fit import fit_readout

    from uq_bias.models.mace import MACEAdapter
    from uq_bias.training.build import build_mace
    from uq_bias.training.statistics import compute_statistics
    from uq_bias.uncertainty.ensemble import Ensemble

    stats = compute_statistics(cu8_frames, 4.0)
    members = [
        fit_readout(
            MACEAdapter(build_mace([13, 29], cutoff=4.0, statistics=stats, seed=s)), cu8_frames
        )
        for s in range(3)
    ]
    return Ensemble(members)


@pytest.fixture(scope="session")
def gradient_model(cu8_frames):
    """Gradient-feature (posterior) uncertainty of an untrained tiny MACE for H, C, O, Al, Cu,
    conditioned on Cu/Al cells and rattled methanol."""
    from uq_bias.models.mace import MACEAdapter
    from uq_bias.training.build import build_mace
    from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

    molecules = []
    for seed in range(4):
        atoms = molecule("CH3OH")
        atoms.rattle(0.05, seed=seed)
        molecules.append(atoms)
    adapter = MACEAdapter(build_mace([1, 6, 8, 13, 29], cutoff=4.0, seed=3))
    return GradientFeatureUncertainty(adapter).fit(list(cu8_frames[:4]) + molecules)


@pytest.fixture(scope="session")
def fitted_gradient_model(fitted_ensemble, cu8_frames):
    """Gradient-feature uncertainty of the first readout-fitted Cu/Al MACE (for MD)."""
    from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

    return GradientFeatureUncertainty(fitted_ensemble.members[0]).fit(cu8_frames)
