"""The thermal band against Langevin MD of a real potential, and the pool it leaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uq_bias.selection.thermal import band_limit, band_pool, degrees_of_freedom, thermal_moments


def test_band_holds_langevin_md_of_a_near_harmonic_cluster():
    """Cu13 (EMT, relaxed icosahedron) at 10 K is nearly harmonic: ASE's Langevin MD gives a
    mean potential energy per atom above the minimum of f k_B T / (2N), f = 3N - 6 (the
    equipartition theorem, independent of the code), and nearly every frame lies in the band
    mean + 3 std; the periodic count (3N - 3) would move the mean by 9 %. (Langevin's
    ``fixcm=True`` samples a small cluster 11 % too hot: off.)"""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.cluster import Icosahedron
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.optimize import BFGS

    atoms = Icosahedron("Cu", 2)
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=1e-5)
    minimum, n = atoms.get_potential_energy(), len(atoms)
    temperature = 10.0
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(0))
    md = Langevin(
        atoms,
        4 * units.fs,
        temperature_K=temperature,
        friction=0.05,
        fixcm=False,
        rng=np.random.default_rng(1),
    )
    md.run(500)
    rises = []
    for _ in range(1000):
        md.run(5)
        rises.append((atoms.get_potential_energy() - minimum) / n)
    mean, _ = thermal_moments(n, temperature, periodic=False)
    assert np.mean(rises) == pytest.approx(mean, rel=0.05)
    assert np.mean(np.array(rises) <= band_limit(n, temperature, 3.0)) > 0.98


def test_moments_are_those_of_a_gamma_distribution():
    """(k_B T / N) Gamma(f / 2): mean and std of exact samples of a harmonic energy."""
    from ase.units import kB

    n, temperature = 20, 300.0
    f = degrees_of_freedom(n, periodic=False)
    z = np.random.default_rng(0).normal(size=(200_000, f))
    per_atom = 0.5 * kB * temperature * (z**2).sum(axis=1) / n
    mean, std = thermal_moments(n, temperature, periodic=False)
    assert mean == pytest.approx(per_atom.mean(), rel=2e-3)
    assert std == pytest.approx(per_atom.std(), rel=1e-2)
    assert degrees_of_freedom(n, periodic=True) == 3 * n - 3


def test_pool_is_the_band_then_the_lowest_of_the_rest():
    rise = torch.tensor([0.01, 0.30, 0.02, 0.50, 0.20, 0.04])
    limit = torch.tensor([0.05, 0.05, 0.05, 0.05, 0.05, 0.10])
    assert band_pool(rise, limit, 2).tolist() == [0, 2, 5]
    assert band_pool(rise, limit, 5).tolist() == [0, 1, 2, 4, 5]


@pytest.mark.parametrize("n_atoms, temperature", [(1, 300.0), (10, 0.0), (10, float("nan"))])
def test_bad_band_inputs_are_refused(n_atoms, temperature):
    with pytest.raises(ValueError, match="thermal band needs"):
        thermal_moments(n_atoms, temperature, periodic=False)
