"""The interface every uncertainty model implements (gradient features, ensembles).

An uncertainty model wraps one or more :class:`~uq_bias.models.AtomisticModel` and returns, for a
batch, the prediction and its calibrated uncertainty:

* ``energy_uncertainty`` U(S) (eV): differentiable with respect to ``graph.positions`` and
  ``graph.strain`` whenever the energy is, so that a bias E_b = E - tau U can be differentiated
  in one autograd pass;
* ``atom_uncertainty`` u_i (eV/A): calibrated against the per-atom force error |F_i - F_i^ref|.

Precision: uncertainty, calibration and bias arithmetic run in float64 whatever the wrapped
model's dtype, and every tensor of an :class:`UncertaintyOutput` is float64.

Layering: this package knows adapters and graphs, never ASE calculators or MD.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from ase import Atoms

from uq_bias.graph import Graph


@dataclass
class UncertaintyOutput:
    """Prediction and uncertainty for a batch of S structures with N atoms, all float64.

    Attributes:
        energy: (S,) predicted energy, eV (the members' mean for an ensemble).
        node_energy: (N,) per-atom energies, eV.
        energy_uncertainty: (S,) calibrated energy uncertainty, eV; differentiable.
        atom_uncertainty: (N,) calibrated per-atom force uncertainty, eV/A.
        forces: (N, 3) eV/A, only from models that compute forces themselves (ensembles);
            otherwise None and the caller differentiates ``energy``.
        stress: (S, 3, 3) eV/A^3 from models that compute it themselves, else None.
        stress_uncertainty: (S, 3, 3) eV/A^3 (ensembles), else None.
        members: per-member values for ensembles, e.g. ``{"energy": (K, S), "forces": (K, N, 3),
            "stress": (K, S, 3, 3)}``; empty otherwise.
    """

    energy: torch.Tensor
    node_energy: torch.Tensor
    energy_uncertainty: torch.Tensor
    atom_uncertainty: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    stress_uncertainty: torch.Tensor | None = None
    members: dict[str, torch.Tensor] = field(default_factory=dict)


def structure_energy(node_energy: torch.Tensor, graph: Graph) -> torch.Tensor:
    """(N,) per-atom energies -> (S,) E(S) = sum_{i in S} E_i, eV, summed in float64.

    Differentiable. More exact than a float32 model's own total: each E_i is rounded at its own
    magnitude (MACE even gives them in float64), the sum is not rounded to float32 again.
    """
    node = node_energy.to(torch.float64)
    return node.new_zeros(graph.n_structures).index_add(0, graph.batch, node)


class UncertaintyModel(torch.nn.Module, ABC):
    """A model whose every prediction carries a calibrated uncertainty."""

    cutoff: float
    atomic_numbers: tuple[int, ...]

    @abstractmethod
    def forward(
        self, graph: Graph, *, forces: bool = False, stress: bool = False
    ) -> UncertaintyOutput:
        """Predict with uncertainty. ``forces``/``stress`` ask models that compute member forces
        (ensembles) to fill them in; other models may leave them None."""

    @abstractmethod
    def graph(self, atoms: Atoms | Sequence[Atoms]) -> Graph:
        """Batch atoms for this model (cutoff, elements, dtype, device)."""

    @abstractmethod
    def selection_features(self, graph: Graph) -> torch.Tensor:
        """(S, D) features G with G G^T the posterior kernel of the batch given the training set."""
