"""Coverage of collective-variable (CV) space: how much of the CV box a set of frames visited.

The definition of the uncertainty-biased MD paper (Zaverkin et al., npj Comput Mater 10:83
(2024)): cut the box of d CVs into a grid of n^d equal cells for n = 2, 4, 8, 16, 32, count
the cells that hold at least one frame, and average the visited fractions over the levels:

    coverage = (1/L) sum_{l=1..L} |{cell_n(x_s) : s = 1..S}| / n_l^d,    n_l = 2^l, L = 5

    cell_n(x)_j = min(floor(n (x_j - low_j) / (high_j - low_j)), n - 1)

A periodic CV is first wrapped into [low_j, high_j) (period high_j - low_j), so phi = 180 deg and
phi = -180 deg fall in the same cell; a non-periodic value outside [low_j, high_j] is not counted.
One frame covers 1/4, 1/16, ... of a 2-CV box at the levels; a trajectory that never moves
covers (1/5) sum_l 4^-l = 0.067 of it; a value on the top edge of a non-periodic box counts in
the last cell. Averaging coarse and fine grids rewards spread (coarse) and detail (fine) alike.

More than two CVs (the backbone torsions of a flexible molecule, :mod:`uq_bias.torsions`): a
grid of 32^d cells is empty however long a walker runs, so the coverage of d > 2 CVs is the mean
over all d (d - 1) / 2 pairs (a, b) of the 2-CV coverage of that pair,

    coverage_d = (2 / (d (d - 1))) sum_{a < b} coverage(x[:, (a, b)])          (d > 2)

which is the coverage above for d <= 2 (one pair for d = 2), rewards every pair of torsions
that moves together, and stays comparable between molecules with different numbers of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Cells per CV of each grid level (2x2, 4x4, ..., 32x32 for two CVs).
LEVELS = (2, 4, 8, 16, 32)


def visited_fractions(
    values: np.ndarray,
    low: Sequence[float],
    high: Sequence[float],
    periodic: Sequence[bool],
    levels: Sequence[int] = LEVELS,
) -> np.ndarray:
    """The fraction of grid cells holding at least one frame, for each level.

    Args:
        values: (S, d) CV values of S frames (any unit: degrees, A).
        low, high: (d,) the box; for a periodic CV, high - low is its period.
        periodic: (d,) whether each CV wraps around.
        levels: cells per CV at each level.

    Returns:
        (len(levels),) visited fractions in [0, 1] (0 for no frames).
    """
    x = np.asarray(values, dtype=np.float64)
    low_, high_ = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    wrap = np.asarray(periodic, dtype=bool)
    if x.ndim != 2 or x.shape[1] != low_.size or high_.size != low_.size or wrap.size != low_.size:
        raise ValueError(
            f"coverage: values must be (frames, d) with d = len(low) = len(high) = len(periodic); "
            f"got values {x.shape}, low {low_.size}, high {high_.size}, periodic {wrap.size}"
        )
    if not np.all(high_ > low_):
        raise ValueError(f"coverage: need high > low for every CV, got low {low_}, high {high_}")
    width = high_ - low_
    x = np.where(wrap, low_ + np.mod(x - low_, width), x)
    inside = np.all(np.isfinite(x) & (x >= low_) & (x <= high_), axis=1)
    unit = (x[inside] - low_) / width  # (S', d) in [0, 1]
    d = low_.size
    fractions = []
    for n in levels:
        cells = np.minimum(np.floor(unit * n).astype(np.int64), n - 1)
        flat = np.ravel_multi_index(cells.T, (n,) * d) if len(cells) else np.empty(0)
        fractions.append(np.unique(flat).size / float(n) ** d)
    return np.asarray(fractions)


def coverage(
    values: np.ndarray,
    low: Sequence[float],
    high: Sequence[float],
    periodic: Sequence[bool],
    levels: Sequence[int] = LEVELS,
) -> float:
    """The mean over ``levels`` of :func:`visited_fractions` (the module docstring's formula);
    for more than two CVs the mean over CV pairs; a number in [0, 1], 0 for no frames."""
    x = np.asarray(values, dtype=np.float64)
    d = len(low)
    if d <= 2:
        return float(np.mean(visited_fractions(x, low, high, periodic, levels)))
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"coverage: values must be (frames, {d}), got {x.shape}")
    pairs = [(a, b) for a in range(d) for b in range(a + 1, d)]
    return float(
        np.mean(
            [
                coverage(
                    x[:, [a, b]],
                    [low[a], low[b]],
                    [high[a], high[b]],
                    [periodic[a], periodic[b]],
                    levels,
                )
                for a, b in pairs
            ]
        )
    )
