"""Posterior and distance formulas against direct linear algebra."""

from __future__ import annotations

import pytest
import torch

from uq_bias.uncertainty.posterior import (
    cholesky_factor,
    feature_scale,
    gram,
    min_distance,
    posterior_variance,
    whiten,
)


@pytest.fixture
def rows():
    gen = torch.Generator().manual_seed(3)
    return torch.randn(7, 5, generator=gen, dtype=torch.float64) * 2.0


def test_posterior_variance_matches_direct_inverse(rows):
    sigma = 0.3
    scale = feature_scale(gram(rows), rows.shape[0])
    assert abs(scale - 1 / rows.pow(2).sum(1).mean().sqrt()) < 1e-14
    queries = torch.randn(4, 5, dtype=torch.float64)
    factor = cholesky_factor(gram(rows), scale, sigma)
    a = (scale * rows).T @ (scale * rows) + sigma**2 * torch.eye(5, dtype=torch.float64)
    direct = sigma**2 * torch.einsum(
        "md,de,me->m", scale * queries, torch.linalg.inv(a), scale * queries
    )
    torch.testing.assert_close(posterior_variance(queries, factor, scale, sigma), direct)
    g = whiten(queries, factor, scale, sigma)
    kernel = sigma**2 * (scale * queries) @ torch.linalg.solve(a, (scale * queries).T)
    torch.testing.assert_close(g @ g.T, kernel)


def test_cholesky_adds_jitter_for_a_singular_matrix():
    """A rank-1 Gram matrix with a sigma below float64 resolution still factorises."""
    row = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    factor = cholesky_factor(gram(row), 1.0, 1e-300)
    assert torch.isfinite(factor).all()
    torch.testing.assert_close(factor @ factor.T, gram(row), atol=1e-9, rtol=0)


def test_min_distance_matches_brute_force(rows):
    queries = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    ours = min_distance(queries, rows, scale=0.5, chunk=3)
    differences = 0.5 * queries[:, None, :] - 0.5 * rows[None, :, :]  # brute force
    reference = differences.pow(2).sum(-1).sqrt().min(dim=1).values
    torch.testing.assert_close(ours, reference)
    (grad,) = torch.autograd.grad(ours.sum(), queries)
    (ref_grad,) = torch.autograd.grad(reference.sum(), queries)
    torch.testing.assert_close(grad, ref_grad)


def test_zero_features_raise():
    with pytest.raises(ValueError, match="features are zero"):
        feature_scale(torch.zeros(3, 3, dtype=torch.float64), 4)
