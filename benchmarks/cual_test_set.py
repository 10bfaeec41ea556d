"""A held-out EMT test set of the Cu3Al fcc alloy, made once and cached outside the repository.

Nothing here is seen by a campaign. The cell is ``repeat`` x ``repeat`` x ``repeat``
conventional fcc cells of Cu (a = 3.61 A) with every fourth atom Al (the builtin ``cual_fcc``
for repeat 2). Every frame carries ``info["subset"]`` and EMT's energy, forces and stress:

* ``npt<T>K_<P>GPa``: NPT MD with EMT itself (ASE's ``MTKNPT``, full cell, 2 fs, from the
  EMT-relaxed cell) at each (T, P) of ``conditions``; after ``equilibrate`` steps one frame
  every ``md_every`` steps, ``md_frames`` per condition;
* ``liquid``: the same at ``liquid`` (T, P), hot enough that the alloy melts;
* ``strain``: the EMT-relaxed cell scaled isotropically by each linear strain of ``strains``
  and sheared by +-``shear`` (a symmetric off-diagonal strain), positions rattled by ``rattle`` A.

The cache file's name carries the content hash of :class:`TestSetSpec` (:mod:`harness.testsets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from harness import cells

NAME = "cual_test"


@dataclass(frozen=True)
class TestSetSpec:
    """What the test set holds (module docstring); temperatures K, pressures GPa."""

    __test__ = False

    repeat: int = 2
    conditions: tuple[tuple[float, float], ...] = ((300.0, 0.0), (900.0, 0.0), (600.0, 2.0))
    liquid: tuple[float, float] = (2000.0, 0.0)
    md_frames: int = 16
    md_every: int = 40
    equilibrate: int = 1000
    strains: tuple[float, ...] = (-0.05, -0.025, 0.025, 0.05)
    shear: float = 0.04
    rattle: float = 0.05
    seed: int = 0


QUICK = TestSetSpec(conditions=((300.0, 0.0), (900.0, 0.0)), md_frames=6, equilibrate=300)


def cual_cell(repeat: int, relaxed: bool = False) -> Atoms:
    """Cu3Al: repeat^3 conventional fcc Cu cells (a = 3.61 A), every fourth atom Al; with
    ``relaxed``, positions and cell relaxed by EMT (12.82 A^3/atom for repeat 2)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (repeat, repeat, repeat)
    atoms.numbers[::4] = 13
    if relaxed:
        from ase.filters import FrechetCellFilter
        from ase.optimize import FIRE

        atoms.calc = EMT()
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=500)
        atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
    return atoms


def labelled(atoms: Atoms, subset: str) -> Atoms:
    """A bare copy of ``atoms`` with EMT's energy, forces and stress attached."""
    return cells.labelled(atoms, EMT(), subset)


def npt_frames(spec: TestSetSpec, temperature: float, pressure: float, seed: int) -> list[Atoms]:
    """``md_frames`` frames of full-cell MTK NPT MD with EMT at (T K, P GPa)."""
    from ase.md.nose_hoover_chain import MTKNPT

    atoms = cual_cell(spec.repeat, relaxed=True)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dt = 2.0 * units.fs
    md = MTKNPT(atoms, dt, temperature, pressure * units.GPa, tdamp=100 * dt, pdamp=500 * dt)
    md.run(spec.equilibrate)
    name = (
        "liquid"
        if (temperature, pressure) == spec.liquid
        else f"npt{temperature:g}K_{pressure:g}GPa"
    )
    frames = []
    for _ in range(spec.md_frames):
        md.run(spec.md_every)
        frames.append(labelled(atoms, name))
    return frames


def strained_frames(spec: TestSetSpec) -> list[Atoms]:
    """The isotropically strained and the sheared cells, rattled."""
    rng = np.random.default_rng(spec.seed)
    base = cual_cell(spec.repeat, relaxed=True)
    label = partial(labelled, subset="strain")
    return cells.strained_cells(base, spec.strains, spec.shear, spec.rattle, rng, label)


def make(spec: TestSetSpec, say=print) -> list[Atoms]:
    """Every frame of the test set (module docstring)."""
    frames = []
    for k, (temperature, pressure) in enumerate((*spec.conditions, spec.liquid)):
        frames.extend(npt_frames(spec, temperature, pressure, seed=spec.seed * 100 + k))
        say(f"test set: NPT MD at {temperature:g} K, {pressure:g} GPa done")
    return frames + strained_frames(spec)
