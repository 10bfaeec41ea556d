"""The ASE calculator.

``Calculator(model)`` follows ASE's conventions: ``implemented_properties`` lists only ASE's own
names (energy, free_energy, forces, stress, energies). Stress is given for cells periodic in all
three directions and never for molecules. Extra results (uncertainties, unbiased values, bias
terms; see :mod:`uq_bias.keys`) live in ``calc.results`` beside them and, with
``copy_to_atoms=True``, are copied into ``atoms.info`` (per structure) and ``atoms.arrays``
(per atom) so that extended XYZ and trajectories keep them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator as ASECalculator
from ase.calculators.calculator import all_changes

from uq_bias import keys
from uq_bias.graph import Graph
from uq_bias.models import AtomisticModel, energy_gradients, load_model


class Calculator(ASECalculator):
    """ASE calculator around an :class:`~uq_bias.models.AtomisticModel` (or a model file).

    Args:
        model: an adapter, a MACE module, or a path to a model file (a pickle: trusted files only).
        copy_to_atoms: copy the extra results into ``atoms.info`` / ``atoms.arrays``.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.
    """

    implemented_properties = list(keys.ASE_PROPERTIES)

    def __init__(
        self,
        model: AtomisticModel | torch.nn.Module | str | Path,
        *,
        copy_to_atoms: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, AtomisticModel) else load_model(model)
        self.copy_to_atoms = copy_to_atoms

    def _graph(self, atoms: Atoms, stress: bool) -> Graph:
        return self.model.graph(atoms).requires_grad_(positions=True, strain=stress)

    def _evaluate(self, graph: Graph, stress: bool) -> dict[str, torch.Tensor]:
        """Results for one structure as tensors keyed by :mod:`uq_bias.keys` names."""
        out = self.model(graph)
        forces, sigma = energy_gradients(out.energy, graph, stress=stress)
        results = {
            keys.ENERGY: out.energy,
            keys.ENERGIES: out.node_energy,
            keys.FORCES: forces,
        }
        if stress:
            results[keys.STRESS] = sigma
        return results

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        stress = bool(self.atoms.pbc.all())
        graph = self._graph(self.atoms, stress)
        tensors = self._evaluate(graph, stress)
        self.results = {name: _to_ase(name, value) for name, value in tensors.items()}
        self.results[keys.FREE_ENERGY] = self.results[keys.ENERGY]
        if self.copy_to_atoms and atoms is not None:
            copy_results(self.results, atoms)


def _to_ase(name: str, value: torch.Tensor):
    """Detach to numpy in ASE's shapes: energy a float, stress Voigt (6,), per-atom arrays."""
    array = value.detach().cpu().numpy()
    if name in keys.PER_STRUCTURE:
        array = array[0]
        if array.shape == (3, 3):
            array = array[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # Voigt xx yy zz yz xz xy
        elif array.ndim == 0:
            return float(array)
    return array


def copy_results(results: dict, atoms: Atoms) -> None:
    """Copy the non-ASE results into ``atoms.info`` (per structure) and ``atoms.arrays``."""
    for name, value in results.items():
        if name in keys.ASE_PROPERTIES:
            continue
        if name in keys.PER_ATOM:
            atoms.arrays[name] = np.asarray(value)
        else:
            atoms.info[name] = value
