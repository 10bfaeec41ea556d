"""Greedy max-det batch selection as a partial pivoted Cholesky, in float64.

With features G (n, D) whose Gram matrix K = G G^T is the posterior kernel of the pool, greedy
max-det picks at step t the frame with the largest conditional variance

    x_t = argmax_x  k_t(x, x),   k_t(x, x) = k(x, x) - k(x, S) k(S, S)^-1 k(S, x),

S = {x_1, ..., x_{t-1}}, which maximises log det K[S + x, S + x] = log det K[S, S] + log k_t(x, x).
That is a pivoted Cholesky factorisation stopped after k columns. In feature space we keep an
orthonormal basis Q (D, t) of the picked frames' residual features (stored as rows, Q^T):

    r = (I - Q Q^T) g_{x_t}   (computed twice: "twice is enough" re-orthogonalisation)
    q = r / ||r||,   k_{t+1}(x, x) = k_t(x, x) - (g_x . q)^2   for every pool frame x,

so a step costs at most one pass over G: O(n k D) time, O(n D + D k) memory, and the n x n
kernel is never formed. ``maxdet_kernel`` does the same from an explicit kernel matrix.

Lazy updates (exact, same picks): variances only decrease, so values from an earlier step s0 are
upper bounds. :class:`LazyVariances` keeps them stale, computes the exact current variance
k_s0(x, x) - ||Q[:, s0:t]^T g_x||^2 only for the top candidates by stale value, and accepts the
best of them when it beats every other stale bound strictly; otherwise it refreshes all frames
with one (n, D) x (D, t - s0) matrix product. Frames far below the top are touched only at
refreshes, so on large pools (>= MIN_POOL frames) a step costs far less than a pass over G.

Symbols: G ``features``; g_x a row of G; k(x, x) ``prior``; k_t(x, x) ``variance``; Q ``basis``.
"""

from __future__ import annotations

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


def training_basis(train_features: torch.Tensor, rtol: float) -> torch.Tensor:
    """(r, D) orthonormal rows spanning the training features' rows.

    Directions with singular value s_i^2 <= rtol * s_max^2 are dropped (numerically absent).
    """
    if train_features.shape[0] == 0:
        return train_features.new_zeros(0, train_features.shape[1])
    _, s, vh = torch.linalg.svd(train_features, full_matrices=False)
    keep = s**2 > rtol * s[0] ** 2
    return vh[keep].contiguous()


class LazyVariances:
    """Conditional variances k_t(x, x) of all frames, updated lazily (see the module doc).

    Args:
        features: (n, D) G.  variance: (n,) exact k_s0(x, x), -inf for frames already out.
        floor: (n,) rtol * k(x, x).  basis: (>= s0, D) Q^T, filled row by row.
        fresh: s0, the number of basis rows already subtracted from ``variance``.
    """

    FIRST_TRY = 256  # candidates evaluated exactly before growing 4x
    MAX_LAG = 16  # refresh all frames once this many basis rows are pending
    MIN_POOL = 32768  # smaller pools: one pass per step costs no more than the bookkeeping

    def __init__(self, features, variance, floor, basis, fresh: int):
        self.features, self.stale, self.floor, self.basis = features, variance, floor, basis
        self.fresh = fresh
        self.stale.masked_fill_(self.stale <= self.floor, NEG_INF)

    def refresh(self, upto: int) -> None:
        """Subtract basis rows fresh..upto from every frame's variance."""
        block = self.basis[self.fresh : upto]
        if block.shape[0] == 1:  # one matrix-vector product, the common case for small pools
            self.stale -= (self.features @ block[0]).square_()
        elif block.shape[0] > 1:
            self.stale -= (self.features @ block.T).square_().sum(dim=1)
        if block.shape[0]:
            self.stale.masked_fill_(self.stale <= self.floor, NEG_INF)
        self.fresh = upto

    def remove(self, i: int) -> None:
        self.stale[i] = NEG_INF

    def argmax(self, upto: int) -> int | None:
        """Index of the largest current variance (lowest index on ties); None if all are out."""
        size = self.FIRST_TRY
        n = self.stale.shape[0]
        if upto - self.fresh >= self.MAX_LAG or n < self.MIN_POOL:
            self.refresh(upto)
        while self.fresh < upto and 8 * size < n:
            found = self._try_candidates(upto, size)
            if found is not None:
                return found
            size *= 4
        self.refresh(upto)
        i = int(torch.argmax(self.stale))
        return None if self.stale[i] == NEG_INF else i

    def _try_candidates(self, upto: int, size: int) -> int | None:
        top = torch.topk(self.stale, size + 1)
        candidates, bound = top.indices[:size], top.values[size]
        block = self.basis[self.fresh : upto]
        exact = self.stale[candidates] - ((self.features[candidates] @ block.T) ** 2).sum(dim=1)
        out = exact <= self.floor[candidates]
        self.stale[candidates[out]] = NEG_INF  # exhausted: stays out at any later step
        exact[out] = NEG_INF
        best = exact.max()
        if best == NEG_INF or not best > bound:
            return None
        return int(candidates[exact == best].min())


def _residual(g: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """g minus its projection on the span of the (t, D) orthonormal rows ``basis``, with one
    re-orthogonalisation pass."""
    if basis.shape[0] == 0:
        return g.clone()
    r = g - basis.T @ (basis @ g)
    return r - basis.T @ (basis @ r)


def maxdet(
    features,
    k: int,
    *,
    train_features=None,
    rtol: float = 1e-10,
) -> Selection:
    """Greedy max-det selection of ``k`` rows of ``features`` (n, D); see the module doc.

    Args:
        features: (n, D) pool features G with G G^T the (posterior) kernel; cast to float64.
        k: number of frames wanted; min(k, n) indices are returned.
        train_features: optional (m, D) features of frames already labelled: the kernel is
            first conditioned on them without noise (bmdal-reg's "TP mode"). Leave it out when
            ``features`` are already posterior features.
        rtol: a frame is exhausted once k_t(x, x) <= rtol * k(x, x) (see ``result`` module doc),
            and the selection stops once the best gain k_t(x_t, x_t) is at most rtol times the
            first pick's: numerically zero, the rest is filled up (``Selection.n_filled``).

    Returns:
        Selection with scores k_t(x_t, x_t), the conditional variance at pick time.
    """
    g_all = as_features(features)
    k = check_k(k)
    rtol = check_rtol(rtol)
    n, dim = g_all.shape
    prior = kernel_diag(g_all)
    if n == 0 or k == 0:
        return Selection([], [], "maxdet")
    variance = prior.clone()
    train_basis = g_all.new_zeros(0, dim)
    if train_features is not None:
        train = as_features(train_features, "train_features", dim).to(g_all.device)
        train_basis = training_basis(train, rtol)
        variance -= ((g_all @ train_basis.T) ** 2).sum(dim=1)
    n_train = train_basis.shape[0]
    basis = g_all.new_zeros(n_train + min(k, n, dim), dim)
    basis[:n_train] = train_basis
    floor = rtol * prior
    lazy = LazyVariances(g_all, variance, floor, basis, n_train)
    picked: list[int] = []
    scores: list[float] = []
    while len(picked) < k and n_train + len(picked) < basis.shape[0]:
        cols = n_train + len(picked)
        i = lazy.argmax(cols)
        if i is None:
            break
        lazy.remove(i)
        r = _residual(g_all[i], basis[:cols])
        res = float(r @ r)
        if res <= float(floor[i]):
            continue
        if scores and res <= rtol * scores[0]:  # the gain has vanished: no frame adds anything
            break
        basis[cols] = r / res**0.5
        picked.append(i)
        scores.append(res)
    return fill_up(picked, scores, prior, k, "maxdet")


def maxdet_kernel(kernel, k: int, *, rtol: float = 1e-10) -> Selection:
    """Greedy max-det from an explicit (n, n) symmetric PSD kernel matrix (for small n).

    Pivoted Cholesky: with L (n, t) the columns so far and pivot x_t,
        l = (K[:, x_t] - L L[x_t]^T) / sqrt(d[x_t]),   d <- d - l^2,   d starting at diag(K).
    Same scores, exhaustion and fill-up rules as :func:`maxdet`.
    """
    kmat = as_features(kernel, "kernel")
    n = kmat.shape[0]
    if kmat.shape[1] != n:
        raise ValueError(f"kernel: expected a square matrix, got shape {tuple(kmat.shape)}")
    k = check_k(k)
    rtol = check_rtol(rtol)
    prior = kmat.diagonal().clone()
    if n == 0 or k == 0:
        return Selection([], [], "maxdet")
    floor = rtol * prior
    variance = prior.clone().masked_fill_(prior <= floor, NEG_INF)
    chol = kmat.new_zeros(n, min(k, n))
    picked: list[int] = []
    scores: list[float] = []
    while len(picked) < min(k, n):
        i = int(torch.argmax(variance))
        if variance[i] == NEG_INF:
            break
        t = len(picked)
        res = float(variance[i])
        if scores and res <= rtol * scores[0]:  # the gain has vanished (see maxdet)
            break
        column = (kmat[:, i] - chol[:, :t] @ chol[i, :t]) / res**0.5
        chol[:, t] = column
        variance -= column**2
        variance[i] = NEG_INF
        variance.masked_fill_(variance <= floor, NEG_INF)
        picked.append(i)
        scores.append(res)
    return fill_up(picked, scores, prior, k, "maxdet")
