"""Greedy max-dist (farthest-point) batch selection in the kernel-induced metric.

The kernel k(x, y) = g_x . g_y induces the distance

    d(x, y)^2 = k(x, x) + k(y, y) - 2 k(x, y) = ||g_x - g_y||^2.

Centres C start as the origin g = 0 plus the optional training features. In the posterior
kernel the origin stands for what the training set already knows (a frame with zero posterior
variance sits there), so d(x, 0)^2 = k(x, x) is the frame's posterior variance. Each step picks

    x_t = argmax_x  min_{c in C} d(x, c)^2,   then C <- C + {x_t},

which costs one (n, D) matrix-vector product per step: O(n k D). Scores are the squared
distances min_c d(x_t, c)^2 at pick time (eV^2 for energy features).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uq_bias.selection.result import (
    Selection,
    as_features,
    check_k,
    check_rtol,
    fill_up,
    kernel_diag,
)

NEG_INF = float("-inf")
CHUNK = 1024


def sq_distances(
    features: torch.Tensor, sq_norms: torch.Tensor, centres: torch.Tensor
) -> torch.Tensor:
    """(n, m) squared distances ||g_x - c||^2 = ||g_x||^2 + ||c||^2 - 2 g_x . c, clamped at 0."""
    d2 = sq_norms[:, None] + (centres * centres).sum(dim=1)[None, :] - 2 * features @ centres.T
    return d2.clamp_(min=0)


def nearest_centre(
    features: torch.Tensor, sq_norms: torch.Tensor, centres: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to, and index of, the nearest of {origin (index 0)} + ``centres``
    (indices 1..m). Processes the centres in chunks to bound memory at (n, 1024)."""
    best = sq_norms.clone()
    owner = torch.zeros_like(sq_norms, dtype=torch.int64)
    if centres is None:
        return best, owner
    for start in range(0, centres.shape[0], CHUNK):
        d2, arg = sq_distances(features, sq_norms, centres[start : start + CHUNK]).min(dim=1)
        closer = d2 < best
        best = torch.where(closer, d2, best)
        owner = torch.where(closer, arg + 1 + start, owner)
    return best, owner


@dataclass
class Start:
    """Checked inputs and starting centres of max-dist and LCMD (n pool frames).

    Attributes:
        features: (n, D) float64 pool features g_x.   k: frames to select.
        sq_norms: (n,) k(x, x).   floor: (n,) rtol * k(x, x), the exhaustion threshold.
        distance: (n,) squared distance to the nearest starting centre, -inf if exhausted.
        owner: (n,) index of that centre (0 the origin, 1..m the training features).
        n_fixed: number of starting centres, 1 + m.
    """

    features: torch.Tensor
    k: int
    sq_norms: torch.Tensor
    floor: torch.Tensor
    distance: torch.Tensor
    owner: torch.Tensor
    n_fixed: int


def start(features, k: int, train_features, rtol: float) -> Start | None:
    """Check the inputs and place the starting centres (origin + ``train_features``);
    None when there is nothing to select (an empty pool or k = 0)."""
    g_all = as_features(features)
    k = check_k(k)
    rtol = check_rtol(rtol)
    n, dim = g_all.shape
    sq_norms = kernel_diag(g_all)
    if n == 0 or k == 0:
        return None
    train = None
    if train_features is not None:
        train = as_features(train_features, "train_features", dim).to(g_all.device)
    n_fixed = 1 + (0 if train is None else train.shape[0])
    distance, owner = nearest_centre(g_all, sq_norms, train)
    floor = rtol * sq_norms
    distance.masked_fill_(distance <= floor, NEG_INF)
    return Start(g_all, k, sq_norms, floor, distance, owner, n_fixed)


def maxdist(
    features,
    k: int,
    *,
    train_features=None,
    rtol: float = 1e-10,
) -> Selection:
    """Greedy farthest-point selection of ``k`` rows of ``features`` (n, D); see module doc.

    A frame is exhausted once its squared distance to the centres is <= rtol * k(x, x)
    (a duplicate of a centre); exhausted frames are only used by the fill-up rule.
    """
    s = start(features, k, train_features, rtol)
    if s is None:
        return Selection([], [], "maxdist")
    g_all, k, sq_norms, floor, distance = s.features, s.k, s.sq_norms, s.floor, s.distance
    picked: list[int] = []
    scores: list[float] = []
    while len(picked) < k:
        i = int(torch.argmax(distance))
        if distance[i] == NEG_INF:
            break
        picked.append(i)
        scores.append(float(distance[i]))
        new = sq_distances(g_all, sq_norms, g_all[i : i + 1])[:, 0]
        distance = torch.minimum(distance, new)
        distance[i] = NEG_INF
        distance.masked_fill_(distance <= floor, NEG_INF)
    return fill_up(picked, scores, sq_norms, k, "maxdist")
