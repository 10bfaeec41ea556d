"""Time greedy max-det (uq_bias) against bmdal-reg's MaxDet on the same random features.

    python benchmarks/selection.py [--sizes 2000 20000 100000] [--dim 512] [--k 64] [--repeat 3]

Features are float64 Gaussian (n, D) rows; both libraries select k frames in P-mode from the
same tensor, in the same run. Prints the best-of-``repeat`` wall time of each, their ratio,
the time per pool frame (flat when time grows linearly with the pool) and whether both picked
the same indices. bmdal-reg uses ``np.Inf``, which NumPy 2 removed; it is restored here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from harness.quiet import quiet

from uq_bias.selection import maxdet


def bmdal_maxdet(features: torch.Tensor, k: int) -> list[int]:
    """bmdal-reg's kernel-space MaxDet on identity features (P-mode: no training set)."""
    if not hasattr(np, "Inf"):
        np.Inf = np.inf  # bmdal-reg 3.0.2 still spells it this way
    from bmdal_reg.bmdal.feature_data import TensorFeatureData
    from bmdal_reg.bmdal.feature_maps import IdentityFeatureMap
    from bmdal_reg.bmdal.features import Features
    from bmdal_reg.bmdal.selection import MaxDetSelectionMethod

    def wrap(x: torch.Tensor) -> Features:
        return Features(IdentityFeatureMap(x.shape[1]), TensorFeatureData(x))

    method = MaxDetSelectionMethod(wrap(features), wrap(features[:0]), verbosity=0)
    return method.select(k).tolist()


def best_time(fn, repeat: int) -> tuple[float, list[int]]:
    best, result = float("inf"), []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float64, "
        f"D = {args.dim}, k = {args.k}, best of {args.repeat}"
    )
    header = f"{'pool':>8} {'uq_bias s':>10} {'bmdal s':>10} {'ratio':>7} {'uq us/frame':>12} same"
    print(header)
    for n in args.sizes:
        gen = torch.Generator().manual_seed(args.seed)
        feats = torch.randn(n, args.dim, generator=gen, dtype=torch.float64)
        ours, ours_idx = best_time(lambda f=feats: maxdet(f, args.k).indices, args.repeat)
        theirs, their_idx = best_time(lambda f=feats: bmdal_maxdet(f, args.k), args.repeat)
        print(
            f"{n:>8} {ours:>10.3f} {theirs:>10.3f} {ours / theirs:>7.2f} "
            f"{1e6 * ours / n:>12.2f} {ours_idx == their_idx}",
            flush=True,
        )


if __name__ == "__main__":
    main()
