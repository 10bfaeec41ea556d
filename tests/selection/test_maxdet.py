"""Greedy max-det against bmdal-reg, a brute-force log-det and the determinant identity."""

from __future__ import annotations

import pytest
import torch

from uq_bias.selection import greedy_logdet_reference, maxdet, maxdet_kernel
from uq_bias.selection.maxdet import LazyVariances


@pytest.mark.parametrize("n_train", [0, 6])
def test_maxdet_matches_bmdal(bmdal, n_train, gaussian):
    pool, train = gaussian(300, 24, seed=1), gaussian(n_train, 24, seed=2)
    method = bmdal.MaxDetSelectionMethod(
        bmdal.features(pool), bmdal.features(train), sel_with_train=n_train > 0, verbosity=0
    )
    expected = method.select(15).tolist()
    ours = maxdet(pool, 15, train_features=train if n_train else None)
    assert ours.indices == expected
    assert ours.n_filled == 0


def test_maxdet_matches_brute_force_logdet(gaussian):
    feats = gaussian(40, 10, seed=3) * torch.linspace(0.5, 2.0, 40)[:, None]
    kernel = feats @ feats.T
    expected = greedy_logdet_reference(kernel, 8)
    assert maxdet(feats, 8).indices == expected
    assert maxdet_kernel(kernel, 8).indices == expected


def test_scores_are_determinant_ratios(gaussian):
    """score_t = det K[S_t, S_t] / det K[S_(t-1), S_(t-1)], the conditional variance."""
    feats = gaussian(30, 12, seed=4)
    kernel = feats @ feats.T
    sel = maxdet(feats, 6)
    logdets = [0.0] + [
        float(torch.linalg.slogdet(kernel[sel.indices[:t]][:, sel.indices[:t]])[1])
        for t in range(1, 7)
    ]
    expected = torch.tensor(logdets, dtype=torch.float64).diff().exp()
    torch.testing.assert_close(
        torch.tensor(sel.scores, dtype=torch.float64), expected, rtol=1e-10, atol=0
    )
    torch.testing.assert_close(
        torch.tensor(maxdet_kernel(kernel, 6).scores, dtype=torch.float64), expected
    )


def test_duplicates_never_picked_twice_while_distinct_frames_remain(gaussian):
    distinct = gaussian(10, 16, seed=5)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(6))
    pool = torch.cat([distinct, distinct, distinct])[order]  # each frame three times, shuffled
    origin = (order % 10).tolist()  # which distinct frame each pool row is
    sel = maxdet(pool, 14)
    first = [origin[i] for i in sel.indices[:10]]
    assert sorted(first) == list(range(10))
    assert sel.n_filled == 4
    assert len(set(sel.indices)) == 14
    # the fill-up takes the remaining rows by decreasing variance k(x, x), then by index
    rest = sorted(
        set(range(30)) - set(sel.indices[:10]), key=lambda i: (-float(pool[i] @ pool[i]), i)
    )
    assert sel.indices[10:] == rest[:4]
    assert sel.scores[10:] == [0.0] * 4


def test_rank_exhaustion_then_fill(gaussian):
    feats = gaussian(20, 4, seed=7)  # rank 4: only four frames add information
    sel = maxdet(feats, 20)
    assert sel.n_filled == 16
    assert sorted(sel.indices) == list(range(20))
    assert sel.indices[:4] == greedy_logdet_reference(feats @ feats.T, 20)


def test_k_larger_than_pool_and_empty_pool(gaussian):
    feats = gaussian(5, 8, seed=8)
    sel = maxdet(feats, 50)
    assert sorted(sel.indices) == list(range(5)) and sel.n_filled == 0
    assert sel.indices == greedy_logdet_reference(feats @ feats.T, 5)
    empty = maxdet(torch.zeros(0, 8, dtype=torch.float64), 4)
    assert empty.indices == [] and empty.scores == []
    assert maxdet(feats, 0).indices == []


def posterior_features(phi, phi_train, sigma: float) -> torch.Tensor:
    """G(x) = sigma L^-1 phi(x), L L^T = Phi^T Phi + sigma^2 I: G G^T is the GP posterior kernel."""
    a = phi_train.T @ phi_train + sigma**2 * torch.eye(phi.shape[1], dtype=phi.dtype)
    chol = torch.linalg.cholesky(a)
    return sigma * torch.linalg.solve_triangular(chol, phi.T, upper=False).T


def test_frame_identical_to_training_frame_is_picked_last(gaussian):
    phi_train = gaussian(6, 40, seed=9)
    pool_phi = torch.cat([gaussian(8, 40, seed=10), phi_train[2:3]])  # row 8 is a training frame
    g = posterior_features(pool_phi, phi_train, sigma=0.1)
    # independent check of the posterior kernel: sigma^2 phi^T A^-1 phi' (DESIGN.md)
    a = phi_train.T @ phi_train + 0.01 * torch.eye(40, dtype=torch.float64)
    torch.testing.assert_close(g @ g.T, 0.01 * pool_phi @ torch.linalg.solve(a, pool_phi.T))
    sel = maxdet(g, 9)
    assert sel.indices[-1] == 8 and sel.n_filled == 0
    # the same with noise-free conditioning on the training features: exhausted, filled last
    sel = maxdet(pool_phi, 9, train_features=phi_train)
    assert sel.indices[-1] == 8 and sel.n_filled == 1


def test_permutation_and_scale(gaussian):
    feats = gaussian(50, 12, seed=11)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(12))
    base = maxdet(feats, 10).indices
    assert [int(perm[i]) for i in maxdet(feats[perm], 10).indices] == base
    assert maxdet(1e-3 * feats, 10).indices == base
    assert maxdet(feats.float(), 10).indices == maxdet(feats.float().double(), 10).indices


def test_ties_go_to_the_lower_index():
    feats = torch.eye(6, dtype=torch.float64)  # all variances equal, all orthogonal
    assert maxdet(feats, 6).indices == list(range(6))
    assert maxdet_kernel(feats @ feats.T, 6).indices == list(range(6))


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.ones(3), 1), "2-D"),
        ((torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 1), "row\\(s\\) \\[0\\]"),
        ((torch.ones(3, 2), -1), "k must be >= 0"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        maxdet(*args)
    with pytest.raises(ValueError, match="columns"):
        maxdet(torch.ones(3, 2), 1, train_features=torch.ones(2, 5))


@pytest.mark.parametrize("pool_kind", ["gaussian", "clustered"])
def test_lazy_updates_match_bmdal(bmdal, gaussian, clustered, pool_kind, monkeypatch):
    """With MIN_POOL lowered, n = 3000 > 8 * FIRST_TRY takes the lazy path (accepted bounds and
    refreshes). Clustered pools make the stale bounds loose (variances drop fast)."""
    monkeypatch.setattr(LazyVariances, "MIN_POOL", 0)
    if pool_kind == "gaussian":
        pool = gaussian(3000, 64, seed=13)
    else:
        pool = clustered(n_clusters=30, per=100, dim=64, seed=14)
    method = bmdal.MaxDetSelectionMethod(
        bmdal.features(pool), bmdal.features(pool[:0]), verbosity=0
    )
    assert maxdet(pool, 48).indices == method.select(48).tolist()


def test_stops_when_the_gain_vanishes_against_the_first_pick():
    """A direction 1e-7 long (gain 1e-14, i.e. 1e-14 of the first pick's gain 1) is numerically
    nothing: max-det stops after one pick and fills up, although the frame's own relative
    residual (1 of its prior) is large; both implementations agree."""
    g = torch.tensor([[1.0, 0.0], [0.0, 1e-7], [0.5, 0.0]], dtype=torch.float64)
    for sel in (maxdet(g, 3), maxdet_kernel(g @ g.T, 3)):
        assert sel.indices[0] == 0 and sel.n_filled == 2
        assert sel.scores == [1.0, 0.0, 0.0]
    kept = maxdet(g, 3, rtol=1e-16)  # a smaller rtol keeps the tiny direction
    assert kept.indices[:2] == [0, 1] and kept.n_filled == 1
