"""Slow, obviously-correct greedy log-det: the reference that the fast max-det is tested against.

At each step, for every candidate x not yet chosen, compute log det K[S + x, S + x] with a dense
``slogdet`` and keep the largest (the lowest index on ties). Costs O(k n k^3): small cases only.
"""

from __future__ import annotations

import math

import torch

from uq_bias.selection.result import as_features, check_k


def greedy_logdet_reference(kernel, k: int, rtol: float = 1e-10) -> list[int]:
    """Indices chosen greedily by log det of the (n, n) kernel's principal submatrix.

    A candidate x counts only if det K[S + x] / det K[S] > rtol * K[x, x] (it adds something
    beyond round-off); stops early when none does (rank exhausted).
    """
    kmat = as_features(kernel, "kernel")
    k = check_k(k)
    n = kmat.shape[0]
    chosen: list[int] = []
    logdet_chosen = 0.0
    while len(chosen) < min(k, n):
        best, best_logdet = None, float("-inf")
        for x in range(n):
            if x in chosen:
                continue
            idx = torch.as_tensor(chosen + [x])
            sign, logdet = torch.linalg.slogdet(kmat[idx][:, idx])
            gain = float(logdet) - logdet_chosen
            floor = rtol * float(kmat[x, x])
            enough = floor <= 0 or gain > math.log(floor)
            if sign > 0 and enough and float(logdet) > best_logdet:
                best, best_logdet = x, float(logdet)
        if best is None:
            break
        chosen.append(best)
        logdet_chosen = best_logdet
    return chosen
