"""Fixtures for the selection tests: random feature matrices and bmdal-reg as a reference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch


def _gaussian(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def gaussian():
    """gaussian(n, dim, seed): (n, dim) float64 standard-normal rows from a seeded generator."""
    return _gaussian


@pytest.fixture
def bmdal(monkeypatch):
    """bmdal-reg's selection methods and a ``features(x)`` wrapper for identity features.

    bmdal-reg 3.0.2 still uses ``np.Inf``, removed in NumPy 2: restored for the test only."""
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    from bmdal_reg.bmdal import selection
    from bmdal_reg.bmdal.feature_data import TensorFeatureData
    from bmdal_reg.bmdal.feature_maps import IdentityFeatureMap
    from bmdal_reg.bmdal.features import Features

    def features(x: torch.Tensor) -> Features:
        return Features(IdentityFeatureMap(x.shape[1]), TensorFeatureData(x))

    return SimpleNamespace(
        features=features,
        **{
            name: getattr(selection, name)
            for name in (
                "MaxDetSelectionMethod",
                "MaxDistSelectionMethod",
                "LargestClusterMaxDistSelectionMethod",
            )
        },
    )


@pytest.fixture
def clustered():
    """clustered(n_clusters, per, dim, seed): blobs of different spread around random centres,
    (n_clusters * per, dim) float64; distance-based methods differ on these."""

    def make(n_clusters: int = 6, per: int = 40, dim: int = 10, seed: int = 0) -> torch.Tensor:
        centres = 4 * _gaussian(n_clusters, dim, seed)
        spread = torch.linspace(0.2, 1.5, n_clusters, dtype=torch.float64)
        noise = _gaussian(n_clusters * per, dim, seed + 1)
        return centres.repeat_interleave(per, 0) + spread.repeat_interleave(per)[:, None] * noise

    return make
