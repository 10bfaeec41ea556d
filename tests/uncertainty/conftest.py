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
    """Three tiny float64 ScaleShiftMACE models for Al/Cu that differ only in their seed."""
    from uq_bias.training.build import build_mace

    others = [build_mace([13, 29], cutoff=4.0, seed=s, dtype=torch.float64) for s in (1, 2)]
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


def fit_last_layer(adapter, frames, ridge: float = 1e-6):
    """Set a MACE adapter's last-layer weights w to the least-squares fit of energies and forces.

    E(S) = w . Phi(S) + c(S) is linear in w (Phi(S) = sum_i phi_i), and so are the forces
    F = -J^T w - dc/dr with J = dPhi/dr (one backward pass per feature). Solves
    min |A w - b|^2 + ridge |w|^2 over the rows E/sqrt(n_atoms) and F. Seconds, not minutes of
    Lightning training on shared CPUs; the model is then exactly a Bayesian linear regression.
    """
    graph = adapter.graph(frames).requires_grad_(positions=True)
    out = adapter(graph, features=True)
    phi = torch.zeros(graph.n_structures, adapter.n_features, dtype=out.energy.dtype)
    phi = phi.index_add(0, graph.batch, out.features)
    jac = torch.stack(
        [
            torch.autograd.grad(phi[:, p].sum(), graph.positions, retain_graph=True)[0]
            for p in range(phi.shape[1])
        ],
        dim=-1,
    )  # (N, 3, P)
    (grad_e,) = torch.autograd.grad(out.energy.sum(), graph.positions)
    w = torch.cat([p.reshape(-1) for p in _last_layer_views(adapter)]).detach()
    counts = (graph.ptr[1:] - graph.ptr[:-1]).to(phi.dtype)[:, None]
    e_ref = torch.tensor([a.get_potential_energy() for a in frames], dtype=phi.dtype)
    f_ref = torch.as_tensor(np.concatenate([a.get_forces() for a in frames]), dtype=phi.dtype)
    c = out.energy.detach() - phi.detach() @ w
    minus_dc_dr = -grad_e + jac @ w  # forces of the w-independent part
    rows = torch.cat([phi.detach() / counts.sqrt(), -jac.reshape(-1, phi.shape[1])])
    rhs = torch.cat([(e_ref - c)[:, None] / counts.sqrt(), (f_ref - minus_dc_dr).reshape(-1, 1)])
    eye = torch.eye(rows.shape[1], dtype=rows.dtype)
    solution = torch.linalg.solve(rows.T @ rows + ridge * eye, rows.T @ rhs)[:, 0]
    with torch.no_grad():
        start = 0
        for view in _last_layer_views(adapter):
            view.copy_(solution[start : start + view.numel()])
            start += view.numel()
    return adapter


def _last_layer_views(adapter):
    """Views into the MACE readout weights, in the order of the adapter's features."""
    views = []
    for r in adapter._readouts:
        flat = r.linear.weight.reshape(-1).narrow(0, r.offset, r.mul_in * r.mul_out)
        views.append(flat.view(r.mul_in, r.mul_out)[r.rows, adapter.head])
    return views


def label_xtb(atoms):
    """``atoms`` labelled by GFN2-xTB (tblite), results frozen in a SinglePointCalculator."""
    from tblite.ase import TBLite

    atoms = atoms.copy()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def methanol_frames(n: int, amplitude: float, seed: int):
    """``n`` rattled methanol molecules (Gaussian displacements, ``amplitude`` A), GFN2-xTB."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("CH3OH")
        atoms.positions += rng.normal(scale=amplitude, size=atoms.positions.shape)
        frames.append(label_xtb(atoms))
    return frames


@pytest.fixture(scope="session")
def xtb_data():
    """GFN2-xTB methanol: train/valid/test near equilibrium (0.08 A) and far frames (0.25 A)."""
    return {
        "train": methanol_frames(24, 0.08, seed=0),
        "valid": methanol_frames(20, 0.08, seed=1),
        "test": methanol_frames(20, 0.08, seed=2),
        "far": methanol_frames(8, 0.25, seed=3),
    }


@pytest.fixture(scope="session")
def xtb_model(xtb_data):
    """A tiny MACE for H/C/O whose last layer is fitted to the GFN2-xTB training frames."""
    from uq_bias.models.mace import MACEAdapter
    from uq_bias.training import build_mace, compute_statistics

    stats = compute_statistics(xtb_data["train"], 4.0)
    model = build_mace([1, 6, 8], cutoff=4.0, statistics=stats, seed=0)
    return fit_last_layer(MACEAdapter(model), xtb_data["train"])
