"""Random batch selection: the baseline every informed method should beat.

``k`` distinct indices drawn uniformly without replacement from a ``torch.Generator`` seeded
with ``seed``: the same seed and pool size always give the same indices, on any device.
"""

from __future__ import annotations

import torch

from uq_bias.selection.result import Selection, check_k


def random_selection(n: int, k: int, *, seed: int = 0) -> Selection:
    """min(k, n) distinct pool indices from ``torch.randperm(n)`` with a seeded generator.

    Scores are NaN: a random pick carries no information.
    """
    k = check_k(k)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n (the pool size) must be a non-negative integer, got {n!r}")
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=generator)[: min(k, n)].tolist()
    return Selection(order, [float("nan")] * len(order), "random")
