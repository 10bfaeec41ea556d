"""Gradient-feature uncertainty of one model: posterior (default) or distance, calibrated.

Equations (see :mod:`uq_bias.uncertainty.posterior`, :mod:`uq_bias.uncertainty.features`):

    structure level (energy):   Phi(S) = sum_i phi_i,  rows = training structures' Phi
        posterior  u(S) = sigma || L_S^{-1} s_S Phi(S) ||
        distance   u(S) = min_j || s_S (Phi(S) - Phi_j) ||
    atom level (forces):        rows = all training atoms' phi_i
        posterior  u_i  = sigma || L_A^{-1} s_A phi_i ||
        distance   u_i  = min_j || s_A (phi_i - phi_j) ||
    calibrated:  U(S) = c_E u(S) (eV),  U_i = c_Z[Z_i] u_i (eV/A)
    selection:   G(S) = sigma L_S^{-1} s_S Phi(S) (uncalibrated; G G^T is the posterior kernel,
                 diag(G G^T) = u(S)^2 in posterior mode)

U(S) and U_i are smooth functions of the phi_i and so differentiable with respect to the graph's
positions and strain whenever the energy is. Features, posterior, calibration and outputs are
float64 whatever the model's dtype; E(S) is the float64 sum of the per-atom energies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from ase import Atoms

from uq_bias.graph import Graph
from uq_bias.models import AtomisticModel, load_model
from uq_bias.options import option
from uq_bias.uncertainty.base import UncertaintyModel, UncertaintyOutput, structure_energy
from uq_bias.uncertainty.ensemble import safe_sqrt
from uq_bias.uncertainty.features import FEATURE_KINDS, FeatureMap, structure_sum
from uq_bias.uncertainty.posterior import (
    cholesky_factor,
    feature_scale,
    gram,
    min_distance,
    whiten,
)
from uq_bias.uncertainty.scales import CalibrationScales

METHODS = ("posterior", "distance")


@dataclass(frozen=True)
class UncertaintyOptions:
    """How an uncertainty model is built from trained model(s): gradient features of one model
    (method, features, sketch, sigma) or an ensemble of several (head only)."""

    method: Literal["posterior", "distance"] = option(
        "posterior",
        "Gradient-feature uncertainty: posterior (Bayesian last layer) or distance (to the "
        "nearest training feature).",
    )
    features: Literal["last_layer", "sketch", "all_readouts"] = option(
        "last_layer",
        "last_layer (exact), sketch (random projection to sketch_dim) or all_readouts (exact last "
        "layer + product sketch of the hidden readout layer).",
    )
    sketch_dim: int = option(512, "Dimension p of the random-projection sketches.")
    sigma: float = option(1e-2, "Noise/prior ratio sigma of the posterior (dimensionless).")
    seed: int = option(0, "Seed of the sketches.")
    head: str | int | None = option(None, "Head of a multi-head MACE model; null: the default.")

    def __post_init__(self):
        check_sigma(self.sigma)
        if self.sketch_dim < 1:
            raise ValueError(f"sketch_dim must be >= 1, got {self.sketch_dim}")


def check_sigma(sigma: float) -> None:
    """ValueError unless 0 < sigma and sigma^2 is a finite, non-zero float64 (the posterior adds
    sigma^2 I to the Gram matrix of features scaled to unit mean norm)."""
    try:
        ok = sigma > 0 and 0 < float(sigma) * float(sigma) < math.inf
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"sigma must be a positive number whose square is a finite float (about 1e-154 to "
            f"1e154), got {sigma!r}; the features are scaled to unit mean norm, so 1e-3 to 1 is "
            "the useful range (default 1e-2)"
        )


def _frames(frames: Atoms | Sequence[Atoms], where: str) -> list[Atoms]:
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if len(frames) < 2:
        raise ValueError(
            f"{where}: got {len(frames)} frame(s); fitting needs at least 2 training structures "
            "(the posterior scale and the distances are meaningless for fewer)"
        )
    return frames


class GradientFeatureUncertainty(UncertaintyModel):
    """Uncertainty from the gradient features of one adapter-wrapped model.

    Args:
        model: an adapter, a MACE module or a model file (trusted pickle).
        method: ``posterior`` (default; keeps two D x D Cholesky factors) or ``distance``
            (keeps every training structure's and atom's feature row, float64).
        features: ``last_layer`` (exact), ``sketch`` (random projection to ``sketch_dim``) or
            ``all_readouts`` (exact last layer + product sketch of the hidden readout layer).
        sketch_dim: p, the sketch dimension (default 512).
        sigma: the posterior's noise/prior ratio (default 1e-2).
        seed: seed of the sketches.
        head: head of a multi-head MACE model.
    """

    def __init__(
        self,
        model: AtomisticModel | torch.nn.Module | str | Path,
        *,
        method: str = UncertaintyOptions.method,
        features: str = UncertaintyOptions.features,
        sketch_dim: int = UncertaintyOptions.sketch_dim,
        sigma: float = UncertaintyOptions.sigma,
        seed: int = UncertaintyOptions.seed,
        head: str | int | None = UncertaintyOptions.head,
    ):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        if features not in FEATURE_KINDS:
            raise ValueError(f"unknown features {features!r}; choose one of {list(FEATURE_KINDS)}")
        check_sigma(sigma)
        self.wrapped_paths = [str(model) if isinstance(model, (str, Path)) else None]
        self.model = model if isinstance(model, AtomisticModel) else load_model(model, head=head)
        self.cutoff = float(self.model.cutoff)
        self.atomic_numbers = tuple(self.model.atomic_numbers)
        self.method, self.sigma = method, float(sigma)
        self.feature_map = FeatureMap(self.model, features, sketch_dim, seed)
        like = {"dtype": torch.float64, "device": self.model.device}  # beside the model
        self.calibration = CalibrationScales(**like)
        dim = self.feature_map.dim
        for level in ("structure", "atom"):
            self.register_buffer(f"{level}_factor", torch.zeros(dim, dim, **like))
            self.register_buffer(f"{level}_scale", torch.zeros((), **like))
            self.register_buffer(f"{level}_train", torch.zeros(0, dim, **like))
        self.register_buffer("n_train", torch.zeros((), dtype=torch.int64, device=like["device"]))

    @property
    def fitted(self) -> bool:
        return int(self.n_train) > 0

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def graph(self, atoms: Atoms | Sequence[Atoms]) -> Graph:
        return self.model.graph(atoms)

    kind = "gradient"

    def wrapped(self) -> list[AtomisticModel]:
        return [self.model]

    @classmethod
    def rebuild(cls, models: list[AtomisticModel], options: dict) -> GradientFeatureUncertainty:
        (model,) = models
        return cls(model, **options)

    def check_saveable(self) -> None:
        if not self.fitted:
            raise ValueError("save: the model is not fitted; call .fit(train_frames) first")

    def options(self) -> dict:
        """The JSON-able options that rebuild this model around the same adapter."""
        fmap = self.feature_map
        return {
            "method": self.method,
            "features": fmap.kind,
            "sketch_dim": fmap.sketch_dim,
            "sigma": self.sigma,
            "seed": fmap.seed,
        }

    def atom_features(self, graph: Graph):
        """The adapter's output and the (N, D) per-atom features phi_i."""
        return self.feature_map(self.model, graph)

    def fit(self, frames: Atoms | Sequence[Atoms], batch_size: int = 8):
        """Condition on the training structures ``frames`` (labels are not needed)."""
        frames = _frames(frames, "GradientFeatureUncertainty.fit")
        dim = self.feature_map.dim
        grams = {level: torch.zeros(dim, dim, dtype=torch.float64) for level in ("s", "a")}
        rows: dict[str, list[torch.Tensor]] = {"s": [], "a": []}
        n_atoms = 0
        for start in range(0, len(frames), batch_size):
            graph = self.graph(frames[start : start + batch_size])
            phi = self.atom_features(graph)[1].detach()
            big_phi = structure_sum(phi, graph.batch, graph.n_structures)
            for level, values in (("s", big_phi), ("a", phi)):
                grams[level] = grams[level].to(values.device) + gram(values)
                if self.method == "distance":
                    rows[level].append(values.to(torch.float64))
            n_atoms += graph.n_atoms
        for level, name, count in (("s", "structure", len(frames)), ("a", "atom", n_atoms)):
            scale = feature_scale(grams[level], count)
            getattr(self, f"{name}_scale").fill_(scale)
            setattr(self, f"{name}_factor", cholesky_factor(grams[level], scale, self.sigma))
            if self.method == "distance":
                setattr(self, f"{name}_train", torch.cat(rows[level]))
        self.n_train.fill_(len(frames))
        return self

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ValueError(
                "this GradientFeatureUncertainty is not fitted yet: call .fit(train_frames) or "
                "load a saved state with uq_bias.uncertainty.load(path, model=...)"
            )

    def _raw(self, values: torch.Tensor, level: str) -> torch.Tensor:
        """(m, D) -> (m,) raw uncertainty at ``level`` ('structure' or 'atom')."""
        scale = float(getattr(self, f"{level}_scale"))
        if self.method == "distance":
            return min_distance(values, getattr(self, f"{level}_train"), scale)
        factor = getattr(self, f"{level}_factor")
        return safe_sqrt(whiten(values, factor, scale, self.sigma).pow(2).sum(dim=1))

    def predict(self, graph: Graph, *, forces: bool, stress: bool) -> UncertaintyOutput:
        """Energies and calibrated uncertainties; forces/stress come from the base class
        (-dE/dr by autograd)."""
        self._check_fitted()
        out, phi = self.atom_features(graph)
        big_phi = structure_sum(phi, graph.batch, graph.n_structures)
        energy_u = self.calibration.apply_energy(self._raw(big_phi, "structure"))
        atom_u = self.calibration.apply_atom(self._raw(phi, "atom"), graph.atomic_numbers)
        return UncertaintyOutput(
            energy=structure_energy(out.node_energy, graph),
            node_energy=out.node_energy.to(torch.float64),
            energy_uncertainty=energy_u,
            atom_uncertainty=atom_u,
        )

    def selection_features(self, graph: Graph) -> torch.Tensor:
        """(S, D) G(S) = sigma L_S^{-1} s_S Phi(S) (uncalibrated)."""
        self._check_fitted()
        phi = self.atom_features(graph)[1]
        big_phi = structure_sum(phi, graph.batch, graph.n_structures)
        return whiten(big_phi, self.structure_factor, float(self.structure_scale), self.sigma)
