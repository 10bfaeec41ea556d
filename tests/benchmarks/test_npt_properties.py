"""The NPT benchmark's property helpers against independent routes on EMT copper."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT


def emt_pressure(a: float) -> float:
    """P = -tr(sigma)/3 of EMT fcc Cu with lattice constant ``a``, eV/A^3."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.calc = EMT()
    return float(-np.trace(atoms.get_stress(voigt=False)) / 3)


def test_bulk_modulus_from_energies_equals_the_one_from_stress():
    """B from the Birch-Murnaghan fit of E(V) against B = -V dP/dV from EMT's stress, by
    central differences at the zero-pressure lattice constant (bisection on P)."""
    from npt_properties import bulk_modulus

    low, high = 3.5, 3.7
    for _ in range(40):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if emt_pressure(mid) > 0 else (low, mid)
    a0, h = 0.5 * (low + high), 1e-4
    dp_dv = (emt_pressure(a0 + h) - emt_pressure(a0 - h)) / ((a0 + h) ** 3 - (a0 - h) ** 3)
    b_stress = -(a0**3) * dp_dv / units.GPa
    b_fit = bulk_modulus(bulk("Cu", "fcc", a=a0, cubic=True), EMT(), strain=0.01)
    assert b_fit == pytest.approx(b_stress, rel=0.02)


def test_property_verdict_per_seed_and_mean():
    from exploration_npt import property_verdict

    errors = {("biased", 0): 0.01, ("plain", 0): 0.02, ("biased", 1): 0.05, ("plain", 1): 0.02}
    lines = property_verdict(errors)
    assert lines[0].startswith("- PASS (seed 0)") and lines[1].startswith("- MISS (seed 1)")
    assert lines[2].startswith("- MISS (mean over seeds)") and "(lowest: plain)" in lines[2]
