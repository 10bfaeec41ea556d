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
from uq_bias.bias import Bias, BiasConfig, bias_results
from uq_bias.graph import Graph
from uq_bias.models import AtomisticModel, energy_gradients, load_model
from uq_bias.uncertainty.base import UncertaintyModel, UncertaintyOutput


class Calculator(ASECalculator):
    """ASE calculator around an :class:`~uq_bias.models.AtomisticModel` (or a model file).

    Args:
        model: an uncertainty model (then uncertainties are reported), an adapter, a MACE module,
            or a path to a model file (a pickle: trusted files only).
        copy_to_atoms: copy the extra results into ``atoms.info`` / ``atoms.arrays``.
        bias: a :class:`~uq_bias.bias.BiasConfig` (uncertainty models only): then ``energy``,
            ``forces`` and ``stress`` are the biased ones and ``unbiased_*``, ``bias_*`` sit
            beside them in ``results``. The bias state (tau_rel window) belongs to this calculator.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.
    """

    implemented_properties = list(keys.ASE_PROPERTIES)

    def __init__(
        self,
        model: UncertaintyModel | AtomisticModel | torch.nn.Module | str | Path,
        *,
        copy_to_atoms: bool = False,
        bias: BiasConfig | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        known = isinstance(model, (AtomisticModel, UncertaintyModel))
        self.model = model if known else load_model(model)
        self.copy_to_atoms = copy_to_atoms
        self.bias = None if bias is None else Bias(bias, self.model)

    def _graph(self, atoms: Atoms, stress: bool) -> Graph:
        return self.model.graph(atoms).requires_grad_(positions=True, strain=stress)

    def _evaluate(self, graph: Graph, stress: bool) -> dict[str, torch.Tensor]:
        """Results for one structure as tensors keyed by :mod:`uq_bias.keys` names."""
        if self.bias is not None:
            out, terms = self.bias.evaluate(self.model, graph, stress)
            return {**self._evaluate_uncertainty(out, graph), **bias_results(out, terms)}
        if isinstance(self.model, UncertaintyModel):
            return self._evaluate_uncertainty(self.model(graph, forces=True, stress=stress), graph)
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

    def _evaluate_uncertainty(
        self, out: UncertaintyOutput, graph: Graph
    ) -> dict[str, torch.Tensor]:
        stress = graph.strain.requires_grad
        forces, sigma = out.forces, out.stress
        if forces is None or (stress and sigma is None):
            forces, sigma = energy_gradients(out.energy, graph, stress=stress)
            forces, sigma = forces.double(), None if sigma is None else sigma.double()
        results = {
            keys.ENERGY: out.energy,
            keys.ENERGIES: out.node_energy,
            keys.FORCES: forces,
            keys.ENERGY_UNCERTAINTY: out.energy_uncertainty,
            keys.FORCES_UNCERTAINTY: out.atom_uncertainty,
        }
        if stress:
            results[keys.STRESS] = sigma
            if out.stress_uncertainty is not None:
                results[keys.STRESS_UNCERTAINTY] = out.stress_uncertainty
        for name, value in out.members.items():
            results[f"members_{name}"] = value  # keys.MEMBERS_ENERGY, MEMBERS_FORCES, ...
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


_VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])  # xx yy zz yz xz xy


def _to_ase(name: str, value: torch.Tensor):
    """Detach to numpy in ASE's shapes for one structure: energy a float, stress Voigt (6,),
    per-atom arrays as they are; members' values keep the member axis K first
    (``members_energy`` (K,), ``members_stress`` (K, 6), ``members_forces`` (K, n_atoms, 3))."""
    array = value.detach().cpu().numpy()
    if name in keys.MEMBERS_PER_STRUCTURE:
        array = array[:, 0]
        if array.shape[1:] == (3, 3):
            array = array[:, _VOIGT[0], _VOIGT[1]]
        return array
    if name in keys.PER_STRUCTURE:
        array = array[0]
        if array.shape == (3, 3):
            array = array[_VOIGT]
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
        elif name in keys.MEMBERS_PER_ATOM:  # (K, n_atoms, ...) -> (n_atoms, K * ...)
            value = np.moveaxis(np.asarray(value), 0, 1)
            atoms.arrays[name] = value.reshape(value.shape[0], -1)
        else:
            atoms.info[name] = value
