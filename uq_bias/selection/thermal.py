"""The thermal band: the energies that MD at a temperature T visits, for choosing which candidates
of a biased walker to label.

A biased walker is pushed up the surface, so it runs hotter than its thermostat; its frames show
the model where it is unsure, but a label far above the thermal band teaches the model a region
that MD at T does not visit (measured on PEG: biased labels a median 59-69 meV/atom above the
lowest test frame, MD at 300 K 22 +- 4). The band keeps the exploration and moves the choice:
label only candidates whose unbiased energy a thermal walker could have had.

For a harmonic system of N atoms with f vibrational degrees of freedom (f = 3N - 6 for a
molecule, 3N - 3 in a periodic cell) at temperature T, the classical potential energy above the
minimum is k_B T times a Gamma(f / 2, 1) variable. Per atom:

    mean = f k_B T / (2 N),    std = sqrt(f / 2) k_B T / N,

and the band is

    dE <= mean + width std          (eV/atom)

with dE the candidate's unbiased energy per atom above the reference minimum (the model's energy
of the walker's start structure, which should be relaxed). With width 3 this cuts the upper
tail of the Gamma distribution at 0.56 % for f = 30, 0.25 % for f = 300 and 0.17 % for f = 3000
(the Gaussian's 0.13 % as f grows).

Symbols to names: N ``n_atoms``, T ``temperature`` (K), ``width`` in standard deviations.
"""

from __future__ import annotations

import math

import torch
from ase.units import kB as K_B


def degrees_of_freedom(n_atoms: int, periodic: bool) -> int:
    """f: 3N - 3 in a periodic cell (the centre of mass is fixed), 3N - 6 for a molecule
    (3N - 5 for a linear one is not told apart; one degree of freedom in 3N)."""
    if n_atoms < 2:
        raise ValueError(f"a thermal band needs at least 2 atoms, got {n_atoms}")
    return max(3 * n_atoms - (3 if periodic else 6), 1)


def thermal_moments(n_atoms: int, temperature: float, periodic: bool) -> tuple[float, float]:
    """(mean, std) of the harmonic potential energy per atom above the minimum at
    ``temperature`` K, eV/atom."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"a thermal band needs a temperature above 0 K, got {temperature}")
    f = degrees_of_freedom(n_atoms, periodic)
    kt = K_B * float(temperature)
    return f * kt / (2 * n_atoms), math.sqrt(f / 2) * kt / n_atoms


def band_limit(n_atoms: int, temperature: float, width: float, periodic: bool = False) -> float:
    """The band's upper end, mean + width std, eV/atom above the minimum."""
    mean, std = thermal_moments(n_atoms, temperature, periodic)
    return mean + float(width) * std


def in_band(rise: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """(n,) bool: each candidate's rise dE (eV/atom) at most its ``limit`` (eV/atom)."""
    return rise <= limit


def band_pool(rise: torch.Tensor, limit: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the pool to choose from: every candidate in the band, and, when fewer than
    ``k`` are, the lowest-lying of the rest (by dE - limit) until there are ``k``. Sorted."""
    inside = in_band(rise, limit)
    chosen = torch.nonzero(inside).flatten()
    short = k - len(chosen)
    if short > 0:
        outside = torch.nonzero(~inside).flatten()
        order = torch.argsort(rise[outside] - limit[outside])
        chosen = torch.cat([chosen, outside[order[:short]]])
    return torch.sort(chosen).values
