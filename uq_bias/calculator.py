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
            beside them in ``results``. The bias state (tau_rel window, the fade's lowest
            energy) belongs to this calculator, which follows one trajectory: give each walker,
            or each NEB image, its own calculator (a shared one makes results depend on the
            order of calls).
        temperature: the thermostat temperature of the MD it drives, K: sets the bias's
            ``fade_kt`` fade (a walker sets it itself); None: only an absolute ``fade``.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.
    """

    implemented_properties = list(keys.ASE_PROPERTIES)

    def __init__(
        self,
        model: UncertaintyModel | AtomisticModel | torch.nn.Module | str | Path,
        *,
        copy_to_atoms: bool = False,
        bias: BiasConfig | None = None,
        temperature: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        known = isinstance(model, (AtomisticModel, UncertaintyModel))
        self.model = model if known else load_model(model)
        self.copy_to_atoms = copy_to_atoms
        self.bias = None if bias is None else Bias(bias, self.model, temperature=temperature)

    def _graph(self, atoms: Atoms, stress: bool) -> Graph:
        return self.model.graph(atoms).requires_grad_(positions=True, strain=stress)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        stress = bool(self.atoms.pbc.all())
        # forces are autograd gradients: also under a caller's torch.inference_mode or no_grad
        with torch.inference_mode(False), torch.enable_grad():
            graph = self._graph(self.atoms, stress)
            results = evaluate(self.model, self.bias, graph, stress)
        (self.results,) = split_results(results, graph)
        if self.copy_to_atoms and atoms is not None:
            copy_results(self.results, atoms)


def evaluate(
    model: UncertaintyModel | AtomisticModel, bias: Bias | None, graph: Graph, stress: bool
) -> dict[str, torch.Tensor]:
    """Results for a batch as tensors keyed by :mod:`uq_bias.keys` names: energy, forces (and
    stress), with uncertainties for an uncertainty model and the bias terms with a ``bias``.
    ``graph.positions`` (and ``graph.strain`` with ``stress``) must require grad."""
    if bias is not None:
        out, terms = bias.evaluate(model, graph, stress)
        return {**uncertainty_results(out, graph), **bias_results(out, terms)}
    if isinstance(model, UncertaintyModel):
        return uncertainty_results(model(graph, forces=True, stress=stress), graph)
    out = model(graph)
    forces, sigma = energy_gradients(out.energy, graph, stress=stress)
    results = {keys.ENERGY: out.energy, keys.ENERGIES: out.node_energy, keys.FORCES: forces}
    if stress:
        results[keys.STRESS] = sigma
    return results


def uncertainty_results(out: UncertaintyOutput, graph: Graph) -> dict[str, torch.Tensor]:
    """Tensors of an uncertainty prediction (its forces, and stress when ``graph`` asks for it,
    are filled by the model: see :class:`~uq_bias.uncertainty.base.UncertaintyModel`)."""
    results = {
        keys.ENERGY: out.energy,
        keys.ENERGIES: out.node_energy,
        keys.FORCES: out.forces,
        keys.ENERGY_UNCERTAINTY: out.energy_uncertainty,
        keys.FORCES_UNCERTAINTY: out.atom_uncertainty,
        **out.members,
    }
    if graph.strain.requires_grad:
        results[keys.STRESS] = out.stress
        if out.stress_uncertainty is not None:
            results[keys.STRESS_UNCERTAINTY] = out.stress_uncertainty
    return results


_STRESS_NAMES = frozenset(
    {keys.STRESS, keys.STRESS_UNCERTAINTY, keys.UNBIASED_STRESS, keys.BIAS_STRESS}
    | {keys.BIAS_STRESS_STRENGTH}
    | {keys.MEMBERS_STRESS}
)


def split_results(tensors: dict[str, torch.Tensor], graph: Graph) -> list[dict]:
    """One ASE-style results dict per structure of the batch (numpy, see :func:`_to_ase`), with
    ``free_energy``; stress results only for structures periodic in all three directions."""
    host = {name: value.detach().cpu() for name, value in tensors.items()}
    ptr = graph.ptr.tolist()
    periodic = graph.periodic.tolist()
    out = []
    for s in range(graph.n_structures):
        results = {}
        for name, value in host.items():
            if name in _STRESS_NAMES and not periodic[s]:
                continue
            if name in keys.PER_ATOM:
                part = value[ptr[s] : ptr[s + 1]]
            elif name in keys.MEMBERS_PER_ATOM:
                part = value[:, ptr[s] : ptr[s + 1]]
            elif name in keys.MEMBERS_PER_STRUCTURE:
                part = value[:, s : s + 1]
            else:
                part = value[s : s + 1]
            results[name] = _to_ase(name, part)
        results[keys.FREE_ENERGY] = results[keys.ENERGY]
        out.append(results)
    return out


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
    """Copy the non-ASE results into ``atoms.info`` (per structure) and ``atoms.arrays``,
    replacing every extra result an earlier calculation left there (an earlier bias or stress
    uncertainty would otherwise stay, and be written to files as if current)."""
    for name in keys.EXTRA:
        atoms.info.pop(name, None)
        atoms.arrays.pop(name, None)
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
