"""Selection features conditioned on every labelled frame, for one model or a whole ensemble.

Batch selection needs features G whose Gram matrix G G^T is the posterior kernel of the pool
given *all* frames already labelled (training, validation, calibration, test), so that no label
is spent next to a frame labelled for any purpose. The uncertainty model itself stays as it was
fitted (the bias keeps the ensemble's own uncertainty); these features serve selection only.

Equations (members k = 1..K, or K = 1 for one model; L the labelled frames; per member the
gradient features phi_k of :mod:`uq_bias.uncertainty.features`, posterior of
:mod:`uq_bias.uncertainty.posterior` with noise ratio sigma):

    s_k      = 1 / sqrt(mean_{S in L} ||Phi_k(S)||^2)
    A_k      = s_k^2 Phi_k(L)^T Phi_k(L) + sigma^2 I = L_k L_k^T              (D x D, float64)
    G_k(S)   = sigma L_k^{-1} s_k Phi_k(S)                                     (dimensionless)
    G(S)     = [G_1(S), ..., G_K(S)] / sqrt(K),    G G^T = mean_k G_k G_k^T

An ensemble's own selection features (E_k - mean_k E_k) / sqrt(K - 1) have rank K - 1, so greedy
max-det could pick at most K - 1 frames; G here has rank up to K D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms

from uq_bias.graph import Graph
from uq_bias.uncertainty.base import UncertaintyModel
from uq_bias.uncertainty.ensemble import Ensemble
from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

DEFAULT_SIGMA = 1e-2


class ConditionedFeatures(torch.nn.Module):
    """Posterior gradient features of ``model`` (or of each ensemble member) given ``frames``.

    Args:
        model: a :class:`GradientFeatureUncertainty` (its feature map and sigma are reused) or an
            :class:`Ensemble` (each member's exact last-layer features, noise ratio ``sigma``).
        frames: the labelled frames to condition on (labels are not needed), at least 2.
        sigma: posterior noise ratio for ensemble members (default 1e-2).
        batch_size: frames per graph while fitting.

    Provides ``graph(atoms)`` and ``selection_features(graph) -> (S, D)`` float64, the interface
    :func:`uq_bias.selection.select` uses.
    """

    def __init__(
        self,
        model: UncertaintyModel,
        frames: Sequence[Atoms],
        *,
        sigma: float = DEFAULT_SIGMA,
        batch_size: int = 8,
    ):
        super().__init__()
        self.source = model
        frames = list(frames)
        if isinstance(model, GradientFeatureUncertainty):
            options = {**model.options(), "method": "posterior"}
            parts = [GradientFeatureUncertainty(model.model, **options)]
        elif isinstance(model, Ensemble):
            parts = [GradientFeatureUncertainty(m, sigma=sigma) for m in model.members]
        else:
            raise TypeError(
                "selection conditioned on labelled frames needs a GradientFeatureUncertainty or "
                f"an Ensemble, got {type(model).__name__}; pass precomputed features=... instead"
            )
        for part in parts:
            part.fit(frames, batch_size=batch_size)
        self.parts = torch.nn.ModuleList(parts)

    def graph(self, atoms: Atoms | Sequence[Atoms]) -> Graph:
        return self.source.graph(atoms)

    def selection_features(self, graph: Graph) -> torch.Tensor:
        """(S, K D) G(S) = [G_1(S), ..., G_K(S)] / sqrt(K), float64 (see the module doc)."""
        blocks = [part.selection_features(graph).detach() for part in self.parts]
        return torch.cat(blocks, dim=1) / len(blocks) ** 0.5
