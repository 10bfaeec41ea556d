"""Properties of a periodic system under a calculator, for judging a potential against its
reference: the mean volume per atom from NPT MD and the bulk modulus from an equation of state.

* Mean volume at (T, P): ASE's MTK barostat (``ase.md.nose_hoover_chain.IsotropicMTKNPT``)
  for ``equilibrate`` steps, then the mean of V/N over ``production`` steps, A^3/atom; its
  standard error from ``blocks`` block means (blocks long against the volume's correlation time).
* Bulk modulus at 0 K: E(V) on isotropically scaled copies of the cell (positions relaxed by
  FIRE at each volume, the cell shape held), fitted with a Birch-Murnaghan equation of state
  (``ase.eos.EquationOfState``): B = V d^2E/dV^2 at the minimum, GPa.

The same functions run the reference (EMT, xTB) and the trained model, on the same input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary, thermalize_momenta


@dataclass(frozen=True)
class Volume:
    """Mean volume per atom (A^3/atom) and its standard error from block means."""

    mean: float
    error: float


def npt_volume(
    atoms: Atoms,
    calc,
    temperature: float,
    pressure_gpa: float = 0.0,
    *,
    timestep_fs: float = 2.0,
    equilibrate: int = 500,
    production: int = 1500,
    blocks: int = 5,
    seed: int = 0,
) -> Volume:
    """Mean V/N of isotropic MTK NPT MD at ``temperature`` K and ``pressure_gpa`` GPa."""
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    work = atoms.copy()
    work.calc = calc
    thermalize_momenta(work, temperature, rng=np.random.default_rng(seed))
    Stationary(work)
    md = IsotropicMTKNPT(
        work,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature,
        pressure_au=pressure_gpa * units.GPa,
        tdamp=100 * timestep_fs * units.fs,
        pdamp=1000 * timestep_fs * units.fs,
    )
    md.run(equilibrate)
    volumes = []
    for _ in range(production):
        md.run(1)
        volumes.append(work.get_volume() / len(work))
    means = np.array([b.mean() for b in np.array_split(np.array(volumes), blocks)])
    return Volume(float(np.mean(volumes)), float(means.std(ddof=1) / np.sqrt(blocks)))


def bulk_modulus(atoms: Atoms, calc, strain: float = 0.04, points: int = 7) -> float:
    """B in GPa from a Birch-Murnaghan fit of E(V) over linear strains in [-strain, strain]."""
    from ase.eos import EquationOfState
    from ase.optimize import FIRE

    volumes, energies = [], []
    for s in np.linspace(-strain, strain, points):
        work = atoms.copy()
        work.set_cell(atoms.cell.array * (1.0 + s), scale_atoms=True)
        work.calc = calc
        FIRE(work, logfile=None).run(fmax=0.01, steps=200)
        volumes.append(work.get_volume())
        energies.append(work.get_potential_energy())
    _, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float(b / units.GPa)
