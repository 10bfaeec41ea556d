"""Max-dist (farthest point) against bmdal-reg and a direct cdist loop."""

from __future__ import annotations

import pytest
import torch

from uq_bias.selection import maxdist


def farthest_point_reference(feats: torch.Tensor, centres: torch.Tensor, k: int) -> list[int]:
    """Plain loop: argmax over the pool of the min Euclidean distance to the centres."""
    chosen: list[int] = []
    for _ in range(k):
        d = torch.cdist(feats, centres).min(dim=1).values
        d[chosen] = -1
        chosen.append(int(torch.argmax(d)))
        centres = torch.cat([centres, feats[chosen[-1] : chosen[-1] + 1]])
    return chosen


@pytest.mark.parametrize("n_train", [0, 5])
def test_maxdist_matches_bmdal_and_cdist(bmdal, gaussian, clustered, n_train):
    pool = clustered()
    train = gaussian(n_train, 10, seed=7)
    # our centres start as the origin plus the training features: give bmdal the same set
    centres = torch.cat([torch.zeros(1, 10, dtype=torch.float64), train])
    method = bmdal.MaxDistSelectionMethod(
        bmdal.features(pool), bmdal.features(centres), sel_with_train=True, verbosity=0
    )
    ours = maxdist(pool, 20, train_features=train if n_train else None)
    assert ours.indices == method.select(20).tolist()
    assert ours.indices == farthest_point_reference(pool, centres, 20)
    first = torch.cdist(pool[ours.indices[:1]], centres).min() ** 2
    torch.testing.assert_close(torch.tensor(ours.scores[0], dtype=torch.float64), first)


def test_maxdist_duplicates_and_fill(gaussian):
    distinct = gaussian(8, 6, seed=3)
    pool = torch.cat([distinct, distinct[:4], torch.zeros(1, 6, dtype=torch.float64)])
    sel = maxdist(pool, 13)
    assert sorted(i % 8 for i in sel.indices[:8]) == list(range(8))
    assert sel.n_filled == 5 and sel.indices[-1] == 12  # the zero frame: no variance, last
    assert maxdist(pool[:0], 3).indices == []
