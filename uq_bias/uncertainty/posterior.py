"""Posterior (Bayesian linear regression / GP) and distance uncertainty on gradient features.

Symbols (n training rows, D features, sigma the noise/prior ratio):

    phi~      = s * phi,   s = 1 / sqrt(mean_train ||phi||^2)       (scale, from the training rows)
    A         = Phi~_train^T Phi~_train + sigma^2 I  = L L^T          (D x D, float64 Cholesky)
    u^2(x)    = sigma^2 * phi~(x)^T A^{-1} phi~(x) = || sigma L^{-1} phi~(x) ||^2
    G(x)      = sigma L^{-1} phi~(x),   G G^T = the posterior kernel of a batch
    u_dist(x) = min_j || phi~(x) - phi~_j ||                          (distance uncertainty)

A is accumulated as sum_j phi_j phi_j^T over the training rows (streamed in chunks), so the
rows need not be kept; s^2 = n / trace(sum_j phi_j phi_j^T).
"""

from __future__ import annotations

import torch


def gram(rows: torch.Tensor) -> torch.Tensor:
    """(n, D) -> (D, D) float64 sum_j phi_j phi_j^T."""
    rows = rows.detach().to(torch.float64)
    return rows.T @ rows


def feature_scale(gram_sum: torch.Tensor, n_rows: int) -> float:
    """s = 1 / sqrt(mean ||phi||^2) = sqrt(n / trace(sum_j phi_j phi_j^T))."""
    trace = float(torch.diagonal(gram_sum).sum())
    if not trace > 0:
        raise ValueError(
            "all training features are zero, so the posterior has no scale; the model's last "
            "layer does not see these structures (check the elements and the cutoff)"
        )
    return (n_rows / trace) ** 0.5


def cholesky_factor(gram_sum: torch.Tensor, scale: float, sigma: float) -> torch.Tensor:
    """(D, D) lower L with L L^T = s^2 gram + sigma^2 I, float64; adds jitter if it fails."""
    matrix = gram_sum.to(torch.float64) * scale**2
    eye = torch.eye(matrix.shape[0], dtype=torch.float64, device=matrix.device)
    matrix = 0.5 * (matrix + matrix.T) + sigma**2 * eye
    jitter = 0.0
    base = float(torch.diagonal(matrix).mean()) * 1e-12
    for _ in range(8):
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * eye)
        if int(info) == 0:
            return factor
        jitter = base if jitter == 0.0 else jitter * 100
    raise ValueError(
        f"Cholesky of the posterior matrix failed even with jitter {jitter:g}; "
        f"increase sigma (now {sigma:g})"
    )


def whiten(features: torch.Tensor, factor: torch.Tensor, scale: float, sigma: float):
    """(m, D) -> (m, D) G = sigma L^{-1} (s phi) for every row, float64.

    Differentiable with respect to ``features``; computed and returned in float64.
    """
    rhs = (features.to(torch.float64) * scale).T
    solved = torch.linalg.solve_triangular(factor, rhs, upper=False)
    return sigma * solved.T


def posterior_variance(features: torch.Tensor, factor: torch.Tensor, scale: float, sigma: float):
    """(m, D) -> (m,) u^2 = sigma^2 phi~^T A^{-1} phi~ (dimensionless before calibration)."""
    return whiten(features, factor, scale, sigma).pow(2).sum(dim=1)


def min_distance(features: torch.Tensor, train: torch.Tensor, scale: float, chunk: int = 4096):
    """(m, D), (n, D) -> (m,) min_j || s phi(x) - s phi_j ||, differentiable in ``features``,
    float64.

    ``torch.cdist`` on chunks of ``chunk`` training rows, computed from the differences (not by
    ||a||^2 - 2 a.b + ||b||^2, which cancels for near points); its gradient is 0 at distance 0.
    """
    a = features.to(torch.float64) * scale
    best = None
    for start in range(0, train.shape[0], chunk):
        b = train[start : start + chunk].to(a) * scale
        d = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
        best = d if best is None else torch.minimum(best, d)
    return best
