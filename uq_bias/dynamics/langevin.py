"""Batched Langevin dynamics (BAOAB) for many walkers at once, as pure tensor functions.

One step of length dt for every atom of every walker (Leimkuhler and Matthews, Appl. Math. Res.
Express 2013, 34; ASE units: A, eV, amu, ASE time):

    B:  p <- p + (dt/2) F(r)
    A:  r <- r + (dt/2) p / m
    O:  p <- c1 p + c2 sqrt(m) xi,   c1 = exp(-gamma dt), c2 = sqrt(kT (1 - c1^2)), xi ~ N(0, 1)
    A:  r <- r + (dt/2) p / m
        F <- F(r)                       (one model call for all walkers)
    B:  p <- p + (dt/2) F

With gamma = 0 the O step is the identity and BAOAB is velocity Verlet (NVE). The noise xi is
drawn by the caller, so each walker keeps its own random stream whatever the batch holds.

Symbols to names: r ``positions`` (N, 3) A, p ``momenta`` (N, 3) amu A / ASE time, m ``masses``
(N,) amu, F ``forces`` (N, 3) eV/A, dt ``dt`` ASE time, gamma ``friction`` 1/ASE time,
kT ``kT`` eV, xi ``noise`` (N, 3).

Why not torch-sim: its 0.3 series (the last one for Python 3.11) draws the Langevin noise from
the global torch random generator, so a walker's stream would depend on which other walkers share
its batch and when they stop, and seeding it means changing process-wide state; its integrator
API was replaced in 0.4. The update below is these five lines.
"""

from __future__ import annotations

import math

import torch


def half_kick(momenta: torch.Tensor, forces: torch.Tensor, dt: float) -> torch.Tensor:
    """B: p + (dt/2) F."""
    return momenta + 0.5 * dt * forces


def half_drift(
    positions: torch.Tensor, momenta: torch.Tensor, masses: torch.Tensor, dt: float
) -> torch.Tensor:
    """A: r + (dt/2) p / m."""
    return positions + 0.5 * dt * momenta / masses[:, None]


def ornstein_uhlenbeck(
    momenta: torch.Tensor,
    masses: torch.Tensor,
    noise: torch.Tensor,
    dt: float,
    friction: float,
    kT: float,
) -> torch.Tensor:
    """O: exact solution of dp = -gamma p dt + sqrt(2 gamma m kT) dW over dt,
    c1 p + c2 sqrt(m) xi (see the module equations); the identity for gamma = 0."""
    c1 = math.exp(-friction * dt)
    c2 = math.sqrt(max(kT * (1.0 - c1 * c1), 0.0))
    return c1 * momenta + c2 * masses.sqrt()[:, None] * noise


def baoa(
    positions: torch.Tensor,
    momenta: torch.Tensor,
    forces: torch.Tensor,
    masses: torch.Tensor,
    noise: torch.Tensor,
    *,
    dt: float,
    friction: float,
    kT: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of a BAOAB step before the new forces: returns (r, p) after B, A, O, A.
    Finish the step with :func:`half_kick` on the forces at the returned positions."""
    momenta = half_kick(momenta, forces, dt)
    positions = half_drift(positions, momenta, masses, dt)
    momenta = ornstein_uhlenbeck(momenta, masses, noise, dt, friction, kT)
    return half_drift(positions, momenta, masses, dt), momenta


def kinetic_energy(momenta: torch.Tensor, masses: torch.Tensor, batch: torch.Tensor, n: int):
    """(n,) sum_i |p_i|^2 / (2 m_i) per walker, eV."""
    per_atom = (momenta**2).sum(1) / (2 * masses)
    return per_atom.new_zeros(n).index_add(0, batch, per_atom)
