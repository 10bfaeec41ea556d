"""Contract checks for adapters: give one model and some structures, get the whole suite.

Each ``check_*`` function raises AssertionError with a message on failure, so a new adapter
(NequIP, a user's model) is tested by calling :func:`check_adapter` from one test. The references
are independent of the adapter's own code paths: autograd for the last-layer gradient, central
finite differences for forces and stress, single-structure calls for batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from uq_bias.models.base import AtomisticModel, energy_gradients


def _expect(ok, message: str) -> None:
    """Raise AssertionError(message) unless ``ok`` (an ``assert`` would vanish under -O)."""
    if not ok:
        raise AssertionError(message)


def _num(value: torch.Tensor) -> float:
    return float(value.detach())


def _tolerance(model: AtomisticModel, float64: float, float32: float) -> float:
    return float64 if model.dtype == torch.float64 else float32


def check_last_layer_features(model: AtomisticModel, frames: Sequence[Atoms]) -> None:
    """sum_i phi_i equals autograd's dE/dw for every structure of a batch."""
    graph = model.graph(frames)
    out = model(graph, features=True)
    tol = _tolerance(model, 1e-10, 1e-4)
    for s in range(graph.n_structures):
        phi = out.features[graph.batch == s].sum(0)
        reference = model.last_layer_gradient(out.energy[s])
        scale = reference.abs().max().clamp_min(1.0)
        error = _num((phi - reference).abs().max() / scale)
        _expect(error < tol, f"structure {s}: sum_i phi_i differs from dE/dw by {error:.2e}")


def check_node_energies_sum(model: AtomisticModel, frames: Sequence[Atoms]) -> None:
    """Per-atom energies add up to each structure's energy (summed in float64: an adapter may
    hand back per-atom energies in a wider dtype than its own, as MACE does)."""
    graph = model.graph(frames)
    out = model(graph)
    node = out.node_energy.to(torch.float64)
    summed = node.new_zeros(graph.n_structures).index_add(0, graph.batch, node)
    error = _num((summed - out.energy.to(torch.float64)).abs().max())
    scale = max(1.0, _num(out.energy.abs().max()))  # relative: a float32 total is rounded
    tol = _tolerance(model, 1e-10, 1e-4) * scale
    _expect(error < tol, f"sum of node energies off by {error:.2e}")


def check_batching(model: AtomisticModel, frames: Sequence[Atoms]) -> None:
    """A batch gives the same energies, forces and features as single-structure calls, and no
    gradient leaks between the structures of a batch."""
    graph = model.graph(frames).requires_grad_(True)
    out = model(graph, features=True)
    grad, _ = energy_gradients(out.energy[:1], graph, retain_graph=True)  # -dE_0/dr
    leaked = _num(grad[graph.batch != 0].abs().max()) if len(frames) > 1 else 0.0
    _expect(leaked == 0.0, f"energy of structure 0 depends on other structures' atoms ({leaked})")
    forces, _ = energy_gradients(out.energy, graph)
    tol = _tolerance(model, 1e-9, 1e-4)
    for s, atoms in enumerate(frames):
        single = model.graph(atoms).requires_grad_(True)
        ref = model(single, features=True)
        ref_forces, _ = energy_gradients(ref.energy, single)
        rows = graph.batch == s
        _expect(abs(_num(out.energy[s] - ref.energy[0])) < tol, f"structure {s}: energy differs")
        _expect(torch.allclose(forces[rows], ref_forces, atol=tol), f"structure {s}: forces differ")
        _expect(torch.allclose(out.features[rows], ref.features, atol=tol), f"structure {s}: phi")


def check_inputs_unchanged(model: AtomisticModel, atoms: Atoms) -> None:
    """Evaluating does not modify the Atoms or the graph."""
    before = atoms.copy()
    graph = model.graph(atoms)
    positions = graph.positions.clone()
    model(graph, features=True)
    _expect(atoms == before, "the Atoms object was modified")
    _expect(torch.equal(graph.positions, positions), "graph positions were modified")


def check_invariance(model: AtomisticModel, atoms: Atoms, seed: int = 0) -> None:
    """Energy is unchanged by a rigid rotation, a translation, and (for periodic cells) by
    wrapping atoms back into the cell after a lattice shift; phi_i rotate as scalars."""
    rng = np.random.default_rng(seed)
    reference = model(model.graph(atoms), features=True)
    moved = atoms.copy()
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved.positions = moved.positions @ q.T + rng.normal(size=3)
    if moved.pbc.any():
        moved.set_cell(moved.cell.array @ q.T)
        moved.positions += moved.cell.array[0]
        moved.wrap()
    out = model(model.graph(moved), features=True)
    tol = _tolerance(model, 1e-8, 1e-3)
    _expect(abs(_num(out.energy[0] - reference.energy[0])) < tol, "energy not invariant")
    _expect(torch.allclose(out.features, reference.features, atol=tol), "phi not invariant")


def check_forces_finite_difference(
    model: AtomisticModel, atoms: Atoms, delta: float = 1e-4, n_atoms: int = 3
) -> None:
    """Forces equal minus the central finite-difference gradient of the energy."""
    graph = model.graph(atoms).requires_grad_(True)
    forces, _ = energy_gradients(model(graph).energy, graph)
    for i in range(min(n_atoms, len(atoms))):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                shifted = atoms.copy()
                shifted.positions[i, k] += sign * delta
                with torch.no_grad():
                    energies.append(_num(model(model.graph(shifted)).energy[0]))
            numeric = -(energies[0] - energies[1]) / (2 * delta)
            error = abs(numeric - _num(forces[i, k]))
            _expect(error < 1e-6 + 1e-5 * abs(numeric), f"F[{i},{k}] off by {error:.2e}")


def check_stress_finite_difference(model: AtomisticModel, atoms: Atoms, delta: float = 1e-5):
    """Stress equals (1/V) dE/d(eps) by central finite differences of the strained cell."""
    graph = model.graph(atoms).requires_grad_(True, strain=True)
    _, stress = energy_gradients(model(graph).energy, graph, stress=True)
    volume = atoms.get_volume()
    for a in range(3):
        for b in range(a, 3):
            energies = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] = eps[b, a] = sign * delta
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                with torch.no_grad():
                    energies.append(_num(model(model.graph(strained)).energy[0]))
            # a symmetric off-diagonal step moves eps_ab and eps_ba together: twice the change
            numeric = (energies[0] - energies[1]) / (2 * delta * volume * (1 + (a != b)))
            error = abs(numeric - _num(stress[0, a, b]))
            _expect(error < 1e-7 + 1e-5 * abs(numeric), f"stress[{a},{b}] off by {error:.2e}")


def check_adapter(model: AtomisticModel, molecule: Atoms, periodic: Atoms) -> None:
    """All contract checks on a molecule and a periodic cell (float64 models for the FD parts)."""
    frames = [molecule, periodic]
    check_last_layer_features(model, frames)
    check_node_energies_sum(model, frames)
    check_batching(model, frames)
    check_inputs_unchanged(model, periodic)
    check_invariance(model, molecule)
    check_invariance(model, periodic)
    if model.dtype == torch.float64:
        check_forces_finite_difference(model, molecule)
        check_forces_finite_difference(model, periodic)
        check_stress_finite_difference(model, periodic)
