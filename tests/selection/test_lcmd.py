"""LCMD (written from the paper) against bmdal-reg's implementation and a literal loop."""

from __future__ import annotations

import pytest
import torch

from uq_bias.selection import lcmd, maxdist


def lcmd_reference(feats: torch.Tensor, centres: torch.Tensor, k: int) -> list[int]:
    """The paper's description, literally: assign, sum squared distances, largest cluster,
    its farthest frame."""
    chosen: list[int] = []
    for _ in range(k):
        d = torch.cdist(feats, centres)
        dist, owner = d.min(dim=1)
        dist[chosen] = 0
        sizes = torch.zeros(centres.shape[0], dtype=feats.dtype).index_add_(0, owner, dist**2)
        largest = int(torch.argmax(sizes))
        dist[owner != largest] = -1
        chosen.append(int(torch.argmax(dist)))
        centres = torch.cat([centres, feats[chosen[-1] : chosen[-1] + 1]])
    return chosen


@pytest.mark.parametrize("n_train", [0, 5])
def test_lcmd_matches_bmdal_and_reference(bmdal, gaussian, clustered, n_train):
    pool = clustered()
    train = gaussian(n_train, 10, seed=7)
    centres = torch.cat([torch.zeros(1, 10, dtype=torch.float64), train])
    method = bmdal.LargestClusterMaxDistSelectionMethod(
        bmdal.features(pool), bmdal.features(centres), sel_with_train=True, verbosity=0
    )
    ours = lcmd(pool, 24, train_features=train if n_train else None)
    assert ours.indices == method.select(24).tolist()
    assert ours.indices == lcmd_reference(pool, centres, 24)
    assert ours.indices != maxdist(pool, 24).indices  # a genuinely different rule


def test_lcmd_duplicates_and_edge_cases(gaussian):
    distinct = gaussian(8, 6, seed=3)
    pool = torch.cat([distinct, distinct, torch.zeros(1, 6, dtype=torch.float64)])
    sel = lcmd(pool, 17)
    assert sorted(i % 8 for i in sel.indices[:8]) == list(range(8))
    assert sel.n_filled == 9 and sel.indices[-1] == 16
    assert lcmd(pool, 100).indices[:8] == sel.indices[:8]
    assert len(lcmd(pool, 100)) == 17
    assert lcmd(pool[:0], 3).indices == [] and lcmd(pool, 0).indices == []
