"""Exponential moving average of model weights.

After each optimiser step, for every trained parameter p with shadow copy p_ema,

    p_ema <- d_n * p_ema + (1 - d_n) * p,    d_n = min(decay, (1 + n) / (10 + n))  (warmup)
                                             d_n = decay                           (no warmup)

with n the number of updates so far (0 for the first). The warmup lets the average follow the
weights early in training, when a fixed decay of 0.99 would lag for hundreds of steps.

Validation and the saved model use the shadow weights (swap in, evaluate, swap back).

Why not a library average: Lightning's ``WeightAveraging`` callback swaps the averaged weights
back in its own ``on_validation_epoch_end``, which Lightning runs before the module's, where the
best validation state is recorded (it would record the raw weights); ``torch.optim.swa_utils.
AveragedModel`` keeps a second copy of the whole model and has no warmup. This class keeps one
shadow tensor per trained parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class ExponentialMovingAverage:
    """Shadow copies of ``parameters`` updated with :meth:`update`."""

    def __init__(
        self, parameters: Iterable[torch.nn.Parameter], decay: float = 0.99, warmup: bool = True
    ):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.n_updates = decay, warmup, 0
        self.parameters = [p for p in parameters if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.parameters]

    @property
    def current_decay(self) -> float:
        """d_n for the next update."""
        n = self.n_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay
        for p, s in zip(self.parameters, self.shadow):
            s.lerp_(p.detach().to(s.device), weight)
        self.n_updates += 1

    @torch.no_grad()
    def to(self, device: torch.device) -> None:
        self.shadow = [s.to(device) for s in self.shadow]

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Overwrite the parameters with the shadow weights."""
        for p, s in zip(self.parameters, self.shadow):
            p.copy_(s)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Parameters hold the shadow weights inside the block and their own weights after."""
        saved = [p.detach().clone() for p in self.parameters]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.parameters, saved):
                    p.copy_(v)
