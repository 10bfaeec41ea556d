"""Calibration factors held by an uncertainty model and applied to its raw uncertainties.

A fitted model multiplies its raw energy uncertainty by one factor c_E, its raw per-atom
uncertainty by c_Z[Z_i] (one factor per element, all equal for a global calibration) and its raw
stress uncertainty (ensembles: the members' spread of each stress component) by one factor c_sigma:

    U(S)        = c_E * u(S)             (eV)
    U_i         = c_Z[Z_i] * u_i         (eV/A)
    U_sigma(S)  = c_sigma * u_sigma(S)   (eV/A^3, (3, 3) per structure)

The factors are found by :mod:`uq_bias.uncertainty.calibration`; before calibration they are 1.
They are float64 and applied in float64 whatever the model's dtype.
"""

from __future__ import annotations

import torch

N_ELEMENTS = 119


class CalibrationScales(torch.nn.Module):
    """Buffers ``energy`` (scalar), ``atom`` (119,), indexed by atomic number, and ``stress``
    (scalar)."""

    def __init__(self, dtype: torch.dtype = torch.float64, device: torch.device | None = None):
        super().__init__()
        self.register_buffer("energy", torch.ones((), dtype=dtype, device=device))
        self.register_buffer("atom", torch.ones(N_ELEMENTS, dtype=dtype, device=device))
        self.register_buffer("stress", torch.ones((), dtype=dtype, device=device))

    def apply_energy(self, raw: torch.Tensor) -> torch.Tensor:
        """(S,) -> (S,) c_E * u(S), float64."""
        return raw.to(torch.float64) * self.energy.to(torch.float64)

    def apply_atom(self, raw: torch.Tensor, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N,) c_Z[Z_i] * u_i, float64."""
        return raw.to(torch.float64) * self.atom.to(torch.float64)[atomic_numbers]

    def apply_stress(self, raw: torch.Tensor) -> torch.Tensor:
        """(S, 3, 3) -> (S, 3, 3) c_sigma * u_sigma(S), float64."""
        return raw.to(torch.float64) * self.stress.to(torch.float64)

    def set(self, energy: float, atom: torch.Tensor | float, stress: float | None = None) -> None:
        """Replace the factors (``atom`` a float for all elements or a (119,) tensor; the stress
        factor only when ``stress`` is given)."""
        self.energy.fill_(float(energy))
        if stress is not None:
            self.stress.fill_(float(stress))
        if isinstance(atom, torch.Tensor):
            self.atom.copy_(atom.to(self.atom))
        else:
            self.atom.fill_(float(atom))
