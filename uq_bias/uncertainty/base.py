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
from typing import ClassVar

import torch
from ase import Atoms

from uq_bias.graph import Graph
from uq_bias.models.base import AtomisticModel, energy_gradients


@dataclass
class UncertaintyOutput:
    """Prediction and uncertainty for a batch of S structures with N atoms, all float64.

    Attributes:
        energy: (S,) predicted energy, eV (the members' mean for an ensemble).
        node_energy: (N,) per-atom energies, eV.
        energy_uncertainty: (S,) calibrated energy uncertainty, eV; differentiable.
        atom_uncertainty: (N,) calibrated per-atom force uncertainty, eV/A.
        forces: (N, 3) eV/A; always filled when the model was called with ``forces=True``
            (the model's own, e.g. an ensemble's mean, or -dE/dr by autograd).
        stress: (S, 3, 3) eV/A^3; always filled when called with ``stress=True`` (NaN for
            structures that are not periodic).
        stress_uncertainty: (S, 3, 3) eV/A^3 (ensembles), else None.
        members: per-member values keyed by :mod:`uq_bias.keys` names (``members_energy``
            (K, S), ``members_energies`` (K, N), ``members_forces`` (K, N, 3),
            ``members_stress`` (K, S, 3, 3)); empty for models without members.
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


#: kind -> class of every uncertainty model that can be saved (filled by subclassing).
REGISTRY: dict[str, type[UncertaintyModel]] = {}


class UncertaintyModel(torch.nn.Module, ABC):
    """A model whose every prediction carries a calibrated uncertainty.

    What it returns: :meth:`forward` returns an :class:`UncertaintyOutput` whose ``forces`` and
    ``stress`` are filled whenever they were asked for; subclasses implement :meth:`predict`
    and may fill them themselves (``computes_forces = True``, e.g. an ensemble's mean of member
    forces), else the base class differentiates the energy (keeping the autograd graph, so that
    a bias can still differentiate the uncertainty).

    How it is saved and rebuilt (:mod:`uq_bias.uncertainty.io`): a subclass with a ``kind``
    registers itself; it lists the models it wraps (:meth:`wrapped`, their files in
    ``wrapped_paths``), the JSON options that rebuild it (:meth:`options`) and rebuilds itself
    from both (:meth:`rebuild`). Its other tensors (buffers) are its saved state.
    """

    cutoff: float
    atomic_numbers: tuple[int, ...]
    #: the name of this model in saved states; a subclass with a kind registers itself.
    kind: ClassVar[str] = ""
    #: True when :meth:`predict` fills ``forces`` (and ``stress``) itself at no extra cost.
    computes_forces: ClassVar[bool] = False
    #: True when ``stress=True`` predictions carry a ``stress_uncertainty`` (ensembles).
    gives_stress_uncertainty: ClassVar[bool] = False
    #: the model file of each wrapped model (None where it was given as an object).
    wrapped_paths: list[str | None]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind:
            if kind in REGISTRY and REGISTRY[kind].__qualname__ != cls.__qualname__:
                raise ValueError(
                    f"uncertainty kind {kind!r} is taken by {REGISTRY[kind].__name__}; give "
                    f"{cls.__name__} another kind"
                )
            REGISTRY[kind] = cls

    def forward(
        self, graph: Graph, *, forces: bool = False, stress: bool = False
    ) -> UncertaintyOutput:
        """Predict with uncertainty; ``forces`` / ``stress`` are filled when asked for."""
        if (forces and not graph.positions.requires_grad) or (
            stress and not graph.strain.requires_grad
        ):
            graph = graph.requires_grad_(positions=True, strain=stress)
        with torch.enable_grad():
            out = self.predict(graph, forces=forces, stress=stress)
            if (forces and out.forces is None) or (stress and out.stress is None):
                f, sigma = energy_gradients(out.energy, graph, stress=stress, retain_graph=True)
                out.forces = f.to(torch.float64) if out.forces is None else out.forces
                if out.stress is None and sigma is not None:
                    out.stress = sigma.to(torch.float64)
        return out

    @abstractmethod
    def predict(self, graph: Graph, *, forces: bool, stress: bool) -> UncertaintyOutput:
        """Energies and calibrated uncertainties of ``graph``; may fill forces/stress."""

    @abstractmethod
    def graph(self, atoms: Atoms | Sequence[Atoms]) -> Graph:
        """Batch atoms for this model (cutoff, elements, dtype, device)."""

    @abstractmethod
    def selection_features(self, graph: Graph) -> torch.Tensor:
        """(S, D) features G with G G^T the posterior kernel of the batch given the training set."""

    # -- saving and rebuilding -----------------------------------------------------------------

    @abstractmethod
    def wrapped(self) -> list[AtomisticModel]:
        """The adapter-wrapped models this model is built on (not part of its saved state)."""

    def options(self) -> dict:
        """JSON-able options that, with the wrapped models, rebuild this model."""
        return {}

    @classmethod
    @abstractmethod
    def rebuild(cls, models: list[AtomisticModel], options: dict) -> UncertaintyModel:
        """An unfitted model around ``models`` with ``options`` (its state is loaded after)."""

    def check_saveable(self) -> None:
        """Raise ValueError if the model is not ready to be saved (e.g. not fitted)."""
