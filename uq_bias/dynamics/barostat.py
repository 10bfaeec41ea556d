"""Stochastic cell rescaling: a first-order stochastic barostat for many walkers at once.

The cell follows an overdamped Langevin equation driven by the difference between the external
pressure and the internal pressure tensor (stochastic cell rescaling, Bernetti and Bussi,
J. Chem. Phys. 153, 114107 (2020); full-cell form after Del Tatto, Raiteri, Bernetti and Bussi,
Appl. Sci. 12, 1139 (2022)). A cell move is a symmetric strain d eps applied to the cell and the
positions (rows are vectors, as in ASE); momenta are left as they are:

    h <- h exp(d eps),   r_i <- r_i exp(d eps)

    P_int = -sigma + (N kT / V) I                           (internal pressure tensor)
    full cell:  d eps = -(beta_T / (3 tau_p)) (P0 I - P_int) dt
                        + sqrt(2 kT beta_T dt / (3 V tau_p)) Xi
    isotropic:  d eps = (d ln V / 3) I,
                d ln V = -(beta_T / tau_p) (P0 - tr(P_int) / 3) dt
                         + sqrt(2 kT beta_T dt / (V tau_p)) xi

Xi is a symmetric Gaussian matrix (Xi_aa ~ N(0, 1), Xi_ab = Xi_ba ~ N(0, 1/2)), xi ~ N(0, 1);
the equations are Ito, V taken at the start of the move (Euler-Maruyama). In the full-cell form
ln V = ln det h moves by tr(d eps), which has the isotropic drift and variance: the volume
relaxes the same way in both modes, in about tau_p when beta_T is the true compressibility.
beta_T sets only that speed, not the distribution. The kinetic pressure is the thermostat's
N kT / V, not the instantaneous one (with that, the momenta would have to be scaled with the
cell, and they carry the integrator's finite-step error: BAOAB samples configurations more
accurately than momenta).

What it samples, with a Langevin thermostat on the particles at the same kT:

    isotropic:  rho(V, r, p) ~ exp(-(U + K + P0 V) / kT) dV dr dp
    full cell:  rho(h, r, p) ~ exp(-(U + K + P0 V) / kT) (det h)^(-2) dh dr dp

the isothermal-isobaric ensemble, with the cell measure of Martyna, Tobias and Klein
(J. Chem. Phys. 101, 4177 (1994)) for the full cell: the ensembles ASE's ``IsotropicMTKNPT``
and ``MTKNPT`` are built for. Why: the thermostat samples the momenta given the configuration
and the cell move leaves them alone, so the cell move must sample, at fixed scaled coordinates
s = r h^-1, exp(-(U + P0 V) / kT) V^N mu(h) dh (V^N from dr = V^N ds). For the full cell,
mu = V^-2 and dh / V^3 is the Haar measure of GL(3), for which the vector fields
X_E f(h) = d/dt f(h exp(tE)) have no divergence, so the generator
sum_E e^{F/kT} X_E (D e^{-F/kT} X_E) over an orthonormal basis E of symmetric matrices, with
F = U + P0 V - (N + 1) kT ln V, is symmetric in exp(-F/kT) dh / V^3, the target. With
X_E F = V tr(E (P0 I + sigma)) - (N + 1) kT tr E and D = kT beta_T / (3 V tau_p), whose Ito term
X_E D = -D tr E takes one kT / V off, its drift is the one above; exp(d eps) with Gaussian Xi
realises D sum_E X_E^2. The isotropic case is the same argument on ln V alone, with the
target exp(-(U + P0 V) / kT) V^(N+1) d ln V and D = kT beta_T / (V tau_p). For an ideal gas
(U = 0) the volume is Gamma distributed in both modes, <V> = (N + 1) kT / P0,
var V = (N + 1) (kT / P0)^2 (a test).

Symbols to names: h ``cells`` (W, 3, 3) A (rows are cell vectors), r ``positions`` (N, 3) A,
p ``momenta`` (N, 3) amu A / ASE time, m ``masses`` (N,) amu, sigma ``stress`` (W, 3, 3) eV/A^3
(ASE's sign: (1/V) dE/d eps, tensile positive; the biased stress when the MD is biased),
N ``atoms`` (W,) atoms per walker, V ``volume`` (W,) A^3, P0 ``pressure`` eV/A^3,
beta_T ``compressibility`` A^3/eV, tau_p ``tau`` ASE time, kT ``kT`` eV, dt ``dt`` ASE time,
Xi / xi ``noise`` (W, 3, 3) / (W,), d eps ``strain`` (W, 3, 3), ``batch`` (N,) the walker of
each atom.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from uq_bias.dynamics import langevin


def volume(cells: torch.Tensor) -> torch.Tensor:
    """(W,) |det h|, A^3."""
    return torch.linalg.det(cells).abs()


def internal_pressure(
    stress: torch.Tensor, atoms: torch.Tensor, cells: torch.Tensor, kT: float
) -> torch.Tensor:
    """(W, 3, 3) P_int = -sigma + (N kT / V) I, eV/A^3 (compression positive)."""
    eye = torch.eye(3, dtype=cells.dtype, device=cells.device)
    kinetic = atoms.to(cells.dtype) * kT / volume(cells)
    return -stress + kinetic[:, None, None] * eye


def symmetric_noise(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) symmetric Gaussian Xi from six draws of ``rng``: Xi_aa ~ N(0, 1) and
    Xi_ab = Xi_ba ~ N(0, 1/2), i.e. sum_E E xi_E over an orthonormal basis E of symmetric
    matrices (Frobenius product)."""
    draws = rng.standard_normal(6)
    xi = np.diag(draws[:3])
    upper = draws[3:] / math.sqrt(2.0)
    xi[0, 1] = xi[1, 0] = upper[0]
    xi[0, 2] = xi[2, 0] = upper[1]
    xi[1, 2] = xi[2, 1] = upper[2]
    return xi


def cell_strain(
    pressure_tensor: torch.Tensor,
    cells: torch.Tensor,
    noise: torch.Tensor,
    *,
    dt: float,
    kT: float,
    pressure: float,
    compressibility: float,
    tau: float,
    isotropic: bool,
) -> torch.Tensor:
    """(W, 3, 3) symmetric strain d eps of one cell move (module equations).

    Args:
        pressure_tensor: P_int (W, 3, 3), eV/A^3 (:func:`internal_pressure`).
        cells: h (W, 3, 3), A.
        noise: Xi (W, 3, 3) from :func:`symmetric_noise` (full cell) or xi (W,) (isotropic).
        dt: time step, ASE time.
        kT: eV.
        pressure: P0, eV/A^3.
        compressibility: beta_T > 0, A^3/eV.
        tau: tau_p > 0, ASE time.
        isotropic: volume only (True) or full cell.
    """
    if not (compressibility > 0 and tau > 0):
        raise ValueError(
            f"cell_strain: compressibility and tau must be > 0, got {compressibility} and {tau}"
        )
    v = volume(cells)
    eye = torch.eye(3, dtype=cells.dtype, device=cells.device)
    rate = compressibility * dt / tau
    if isotropic:
        p_int = pressure_tensor.diagonal(dim1=1, dim2=2).sum(1) / 3
        d_ln_v = -rate * (pressure - p_int) + torch.sqrt(2 * kT * rate / v) * noise
        return (d_ln_v / 3)[:, None, None] * eye
    drift = -(rate / 3) * (pressure * eye - pressure_tensor)
    drift = 0.5 * (drift + drift.transpose(1, 2))
    return drift + torch.sqrt(2 * kT * rate / (3 * v))[:, None, None] * noise


def matrix_exp_symmetric(strain: torch.Tensor) -> torch.Tensor:
    """exp(d eps) of symmetric (W, 3, 3) matrices, by eigendecomposition."""
    values, vectors = torch.linalg.eigh(strain)
    return vectors @ torch.diag_embed(values.exp()) @ vectors.transpose(1, 2)


def rescale(
    positions: torch.Tensor, cells: torch.Tensor, strain: torch.Tensor, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply d eps: (r exp(d eps), h exp(d eps)), walker by walker."""
    grow = matrix_exp_symmetric(strain)
    positions = torch.einsum("na,nab->nb", positions, grow[batch])
    return positions, cells @ grow


def baoa(
    positions: torch.Tensor,
    momenta: torch.Tensor,
    forces: torch.Tensor,
    masses: torch.Tensor,
    cells: torch.Tensor,
    stress: torch.Tensor,
    batch: torch.Tensor,
    noise: torch.Tensor,
    cell_noise: torch.Tensor,
    *,
    dt: float,
    friction: float,
    kT: float,
    pressure: float,
    compressibility: float,
    tau: float,
    isotropic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The part of an NPT step before the new forces and stress, B C A O A: returns (r, p, h).

    B half kick with F (:func:`~uq_bias.dynamics.langevin.half_kick`); C the cell move
    (:func:`cell_strain`, :func:`rescale`) with the stress sigma computed at the same r and h as
    F; A O A as in Langevin BAOAB (``noise`` (N, 3) for O, friction gamma). Finish the step
    with ``half_kick`` on the forces at the returned positions and cell. Arguments as in the
    module's symbol table."""
    momenta = langevin.half_kick(momenta, forces, dt)
    atoms = torch.bincount(batch, minlength=cells.shape[0])
    strain = cell_strain(
        internal_pressure(stress, atoms, cells, kT),
        cells,
        cell_noise,
        dt=dt,
        kT=kT,
        pressure=pressure,
        compressibility=compressibility,
        tau=tau,
        isotropic=isotropic,
    )
    positions, cells = rescale(positions, cells, strain, batch)
    positions = langevin.half_drift(positions, momenta, masses, dt)
    momenta = langevin.ornstein_uhlenbeck(momenta, masses, noise, dt, friction, kT)
    return langevin.half_drift(positions, momenta, masses, dt), momenta, cells
