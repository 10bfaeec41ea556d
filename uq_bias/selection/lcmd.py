"""LCMD, largest-cluster maximum-distance selection (Holzmueller et al., JMLR 24(164), 2023).

Written from the paper's description. Centres C start as the origin plus the optional training
features (as in :mod:`uq_bias.selection.maxdist`); every pool frame belongs to the cluster of its
nearest centre c(x) in the kernel metric d. Each step

    s_c = sum_{x : c(x) = c} d(x, c)^2            (size of each cluster)
    c*  = argmax_c s_c                            (the largest cluster)
    x_t = argmax_{x : c(x) = c*} d(x, c*)^2       (its frame farthest from the centre)
    C  <- C + {x_t},   then re-assign frames now closer to x_t.

Each step costs one (n, D) matrix-vector product plus O(n) bookkeeping: O(n k D). Exhausted
frames (d(x, c(x))^2 <= rtol * k(x, x): duplicates of a centre) count in no cluster. Ties go to
the lower centre index, then the lower pool index. Scores are d(x_t, c*)^2 at pick time.
"""

from __future__ import annotations

import torch

from uq_bias.selection.maxdist import NEG_INF, sq_distances, start
from uq_bias.selection.result import Selection, fill_up


def lcmd(
    features,
    k: int,
    *,
    train_features=None,
    rtol: float = 1e-10,
) -> Selection:
    """Largest-cluster max-distance selection of ``k`` rows of ``features`` (n, D)."""
    s = start(features, k, train_features, rtol)
    if s is None:
        return Selection([], [], "lcmd")
    g_all, k, sq_norms, floor = s.features, s.k, s.sq_norms, s.floor
    distance, owner, n_fixed = s.distance, s.owner, s.n_fixed
    picked: list[int] = []
    scores: list[float] = []
    while len(picked) < k:
        alive = distance > NEG_INF
        if not bool(alive.any()):
            break
        sizes = g_all.new_zeros(n_fixed + len(picked))
        sizes.index_add_(0, owner[alive], distance[alive])
        largest = int(torch.argmax(sizes))
        in_cluster = torch.where(owner == largest, distance, NEG_INF)
        i = int(torch.argmax(in_cluster))
        picked.append(i)
        scores.append(float(distance[i]))
        new = sq_distances(g_all, sq_norms, g_all[i : i + 1])[:, 0]
        closer = new < distance
        distance = torch.where(closer, new, distance)
        owner = torch.where(closer, n_fixed + len(picked) - 1, owner)
        distance[i] = NEG_INF
        distance.masked_fill_(distance <= floor, NEG_INF)
    return fill_up(picked, scores, sq_norms, k, "lcmd")
