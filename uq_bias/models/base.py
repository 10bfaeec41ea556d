"""The adapter interface: a torch MLIP as per-atom energies plus exact last-layer features.

An adapter turns a graph into per-atom energies E_i and, on request, last-layer features
phi_i in R^P with

    E_i = w . phi_i + (terms independent of the last-layer weights w),   phi_i = dE_i/dw,

so that the structure feature Phi(S) = sum_i phi_i is the gradient of the total energy with
respect to w. :meth:`AtomisticModel.last_layer_gradient` gives that gradient by autograd, the
independent reference that tests compare sum_i phi_i against.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from ase import Atoms

from uq_bias.graph import Graph, atoms_to_graph


@dataclass
class ModelOutput:
    """What an adapter returns for a batch.

    Attributes:
        energy: (n_structures,) total energies, eV.
        node_energy: (n_atoms,) per-atom energies, eV; they sum to ``energy`` per structure.
            Possibly in a wider dtype than the model's (MACE's ScaleShiftMACE adds the atomic
            reference energies in float64): keep them so, differences between models of
            DFT-scale energies are exact only there.
        features: (n_atoms, P) last-layer features phi_i = dE_i/dw (eV per unit weight), or None
            when not requested.
    """

    energy: torch.Tensor
    node_energy: torch.Tensor
    features: torch.Tensor | None = None


class AtomisticModel(torch.nn.Module, ABC):
    """A torch MLIP behind a narrow interface.

    Subclasses set ``cutoff`` (A) and ``atomic_numbers`` (the elements the model knows) and
    implement :meth:`forward` and :meth:`last_layer_gradient`. Energies must be differentiable
    with respect to ``graph.positions`` and ``graph.strain``.
    """

    cutoff: float
    atomic_numbers: tuple[int, ...]

    @abstractmethod
    def forward(self, graph: Graph, features: bool = False) -> ModelOutput:
        """Energies of every structure and atom; last-layer features if ``features``."""

    @abstractmethod
    def last_layer_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters that hold the last-layer weights w (possibly with more entries)."""

    @abstractmethod
    def last_layer_gradient(self, energy: torch.Tensor) -> torch.Tensor:
        """(P,) dE/dw by autograd for a scalar ``energy``, in the order of the features."""

    @property
    def n_features(self) -> int:
        """P, the length of phi_i."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def graph(self, atoms: Atoms | Sequence[Atoms]) -> Graph:
        """Batch atoms for this model (its cutoff, elements, dtype and device)."""
        return atoms_to_graph(
            atoms,
            self.cutoff,
            atomic_numbers=self.atomic_numbers,
            dtype=self.dtype,
            device=self.device,
        )


def energy_gradients(
    energy: torch.Tensor,
    graph: Graph,
    *,
    stress: bool = False,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forces F = -dE/dr (eV/A) and, if ``stress``, sigma = (1/V) dE/d(eps) (eV/A^3).

    ``energy`` is (n_structures,); one backward pass gives both. Stress needs ``graph.strain``
    to require grad; structures that are not periodic get a NaN stress. ``retain_graph`` keeps
    the autograd graph for a later backward pass (e.g. of an uncertainty on the same graph).
    """
    inputs = [graph.positions] + ([graph.strain] if stress else [])
    grads = torch.autograd.grad(
        energy.sum(),
        inputs,
        create_graph=create_graph,
        retain_graph=retain_graph,
        allow_unused=True,
    )
    forces = -used_gradient(grads[0], graph, "positions")
    if not stress:
        return forces, None
    return forces, graph.per_volume(used_gradient(grads[1], graph, "strain"))


def used_gradient(grad: torch.Tensor | None, graph: Graph, leaf: str) -> torch.Tensor:
    """dE/d``leaf`` (``positions`` or ``strain`` of ``graph``) from
    ``torch.autograd.grad(..., allow_unused=True)``: ``grad``, or zeros where the energy cannot
    depend on it (no edges: isolated atoms; for the strain, no structure periodic in 3D).

    Raises ValueError where it must depend on it and does not: a model that computes its
    distances without :func:`uq_bias.graph.edge_vectors` (or ``strained``), or detaches them,
    would otherwise get forces (or a stress) of exactly zero.
    """
    if grad is not None:
        return grad
    has_edges = graph.edge_index.shape[1] > 0
    if has_edges and (leaf == "positions" or bool(graph.periodic.any())):
        raise ValueError(
            f"the model's energy does not depend on the graph's {leaf}, although atoms have "
            f"neighbours within its cutoff: its {'forces' if leaf == 'positions' else 'stress'} "
            "would be zero. Compute distances from uq_bias.graph.edge_vectors(graph) (it "
            "applies the strain), and do not detach them"
        )
    return torch.zeros_like(getattr(graph, leaf))
