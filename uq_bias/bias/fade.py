"""Energy fade: the bias switches itself off as the walker climbs.

With dE the walker's unbiased energy per atom above the lowest it has had (eV/atom) and
``fade = [a, b]``:

    s(dE) = 1                                      dE <= a
          = (1 + cos(pi (dE - a) / (b - a))) / 2   a < dE < b
          = 0                                      dE >= b

and tau is replaced by s tau in E_b, F_b and sigma_b. The uncertainty gradient points up the
surface as often as along it; a bias that never lets go drives a walker into strained or
clashing geometry the potential is never used in. With the fade the walker is pushed while it
is within a thermal energy range of where it has been, coasts when it is not, and the
thermostat brings it back down. s is taken as a constant of each step (the forces are
-d/dr (E - s tau U) at fixed s), so the biased dynamics does not conserve E_b.

Symbols to names: dE ``rise`` (S,) eV/atom, a ``start``, b ``end``, s the returned factor (S,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def fade_factor(rise: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """s(dE): 1 up to ``start``, a half cosine down to 0 at ``end``.

    Args:
        rise: (S,) dE, the unbiased energy per atom above the walker's lowest, eV/atom.
    """
    x = ((rise - start) / (end - start)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * x))


class Fade:
    """The fade of W walkers: each walker's lowest unbiased energy so far (eV/atom).

    Args:
        start, end: a and b of the module equations, eV/atom.
        walkers: W, one structure each in every graph evaluated.
    """

    def __init__(self, start: float, end: float, walkers: int = 1):
        self.start, self.end = float(start), float(end)
        #: each walker's lowest unbiased energy so far, eV/atom
        self.lowest: list[float] = [math.inf] * walkers

    def factor(self, energy: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(S,) float64 s of each walker, after taking this configuration's unbiased energy
        ``energy`` (S,) eV of ``counts`` (S,) atoms into the walker's lowest."""
        per_atom = energy.detach().to(torch.float64) / counts.to(torch.float64)
        self.lowest = [min(low, e) for low, e in zip(self.lowest, per_atom.tolist())]
        rise = per_atom - per_atom.new_tensor(self.lowest)
        return fade_factor(rise, self.start, self.end)

    def keep(self, walkers: Sequence[int]) -> None:
        """Keep only the states of ``walkers`` (positions in the current batch), in that order."""
        self.lowest = [self.lowest[k] for k in walkers]
