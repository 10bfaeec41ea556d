"""Epoch error metrics that reduce exactly across processes (torchmetrics).

For each quantity q in (energy per atom, forces, stress) the metric keeps three sums over every
batch the process saw: sum e^2, sum |e| and the count n of error components. Under DDP the sums
and counts are added over the ranks *before* the ratios are taken (``dist_reduce_fx="sum"``):

    MSE_q = (sum_ranks sum e^2) / (sum_ranks n),    MAE_q = (sum_ranks sum |e|) / (sum_ranks n)

which is the epoch's MSE over all frames, not a mean of per-rank ratios (those differ whenever
the ranks hold different numbers of atoms).
"""

from __future__ import annotations

import torch
import torchmetrics

from uq_bias.training.loss import ErrorSums

QUANTITIES = ("energy", "forces", "stress")


class EpochErrors(torchmetrics.Metric):
    """Sums of squared and absolute errors and their counts, float64, summed over ranks."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in QUANTITIES:
            for part in ("sq", "abs", "n"):
                zero = torch.zeros((), dtype=torch.float64)
                self.add_state(f"{name}_{part}", default=zero, dist_reduce_fx="sum")

    def update(self, errors: ErrorSums) -> None:
        """Add one batch's :class:`~uq_bias.training.loss.ErrorSums`."""
        for name in QUANTITIES:
            if f"{name}_sq" not in errors.sums:
                continue
            for part in ("sq", "abs"):
                value = errors.sums[f"{name}_{part}"].detach().to(torch.float64)
                setattr(self, f"{name}_{part}", getattr(self, f"{name}_{part}") + value)
            setattr(self, f"{name}_n", getattr(self, f"{name}_n") + errors.counts[f"{name}_sq"])

    def compute(self) -> ErrorSums:
        """The (reduced) sums as :class:`~uq_bias.training.loss.ErrorSums` (quantities without
        data left out), ready for ``.metrics(prefix, weights)``."""
        out = ErrorSums()
        for name in QUANTITIES:
            n = float(getattr(self, f"{name}_n"))
            if n == 0:
                continue
            for part in ("sq", "abs"):
                out.sums[f"{name}_{part}"] = getattr(self, f"{name}_{part}")
                out.counts[f"{name}_{part}"] = n
        return out
