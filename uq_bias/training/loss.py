"""The weighted energy / forces / stress loss and the error metrics behind it.

For a batch of S structures (N_s atoms each, N atoms in total) with predictions (E, F, sigma) and
references (E*, F*, sigma*), and the S' structures that have a stress label:

    L = w_E * (1/S)    sum_s ((E_s - E*_s) / N_s)^2                 (eV/atom)^2
      + w_F * (1/3N)   sum_i sum_a (F_ia - F*_ia)^2                  (eV/A)^2
      + w_S * (1/9S')  sum_s' sum_ab (sigma_s'ab - sigma*_s'ab)^2    (eV/A^3)^2

Each term is a ratio sum/count; :class:`ErrorSums` keeps the sums and counts so that epoch
metrics are exact over all batches rather than means of batch means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from uq_bias.graph import Graph
from uq_bias.models import AtomisticModel, energy_gradients
from uq_bias.options import option
from uq_bias.training.datamodule import Batch


@dataclass(frozen=True)
class LossWeights:
    """Weights w_E, w_F, w_S of the loss terms (see the module docstring)."""

    energy: float = option(1.0, "Weight w_E of the per-atom energy error, 1/(eV/atom)^2.")
    forces: float = option(10.0, "Weight w_F of the force error, 1/(eV/A)^2.")
    stress: float = option(
        100.0, "Weight w_S of the stress error (periodic cells only), 1/(eV/A^3)^2."
    )

    def __post_init__(self):
        for name in ("energy", "forces", "stress"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.energy == 0 and self.forces == 0:
            raise ValueError(
                "loss weights energy and forces are both 0: the loss would not train the energy "
                "surface; give one of them a weight > 0"
            )


@dataclass
class Predictions:
    """energy (S,) eV; forces (N, 3) eV/A; stress (S, 3, 3) eV/A^3 or None."""

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor | None


@dataclass
class ErrorSums:
    """Sums of squared (and absolute) errors and their counts; add batches, then read metrics."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, errors: torch.Tensor) -> None:
        sq, ab = (errors**2).sum(), errors.abs().sum()
        for key, value in ((f"{name}_sq", sq), (f"{name}_abs", ab)):
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0.0) + errors.numel()

    def mse(self, name: str) -> torch.Tensor | None:
        key = f"{name}_sq"
        if not self.counts.get(key):
            return None
        return self.sums[key] / self.counts[key]

    def mae(self, name: str) -> torch.Tensor | None:
        key = f"{name}_abs"
        if not self.counts.get(key):
            return None
        return self.sums[key] / self.counts[key]

    def loss(self, weights: LossWeights) -> torch.Tensor:
        """The weighted loss L of the accumulated errors (terms without data count zero)."""
        total = 0.0
        for name in ("energy", "forces", "stress"):
            mse = self.mse(name)
            if mse is not None:
                total = total + getattr(weights, name) * mse
        return total

    def metrics(self, prefix: str, weights: LossWeights) -> dict[str, torch.Tensor]:
        """``{prefix}_loss``, RMSE and MAE of energy per atom, forces and stress."""
        out = {f"{prefix}_loss": self.loss(weights)}
        for name in ("energy", "forces", "stress"):
            if self.mse(name) is not None:
                out[f"{prefix}_{name}_rmse"] = self.mse(name).sqrt()
                out[f"{prefix}_{name}_mae"] = self.mae(name)
        return out


def predict(
    model: AtomisticModel, graph: Graph, *, stress: bool, create_graph: bool
) -> Predictions:
    """Energies and, by one autograd pass, forces and (if ``stress``) stress of ``graph``."""
    graph = graph.requires_grad_(True, strain=stress)
    with torch.enable_grad():
        out = model(graph)
        forces, sigma = energy_gradients(
            out.energy, graph, stress=stress, create_graph=create_graph
        )
    return Predictions(out.energy, forces, sigma)


def batch_errors(pred: Predictions, batch: Batch) -> ErrorSums:
    """The errors of one batch: energy per atom (S,), forces (N, 3), stress (S', 3, 3)."""
    sums = ErrorSums()
    n_atoms = batch.n_atoms.to(pred.energy.dtype)
    sums.add("energy", (pred.energy - batch.energy) / n_atoms)
    sums.add("forces", pred.forces - batch.forces)
    if pred.stress is not None and bool(batch.has_stress.any()):
        mask = batch.has_stress
        sums.add("stress", pred.stress[mask] - batch.stress[mask])
    return sums


def weighted_loss(pred: Predictions, batch: Batch, weights: LossWeights) -> torch.Tensor:
    """The loss L of one batch (see the module docstring)."""
    return batch_errors(pred, batch).loss(weights)
