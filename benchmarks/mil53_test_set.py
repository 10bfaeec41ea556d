"""A held-out GFN1-xTB test set of MIL-53(Al), made once and cached outside the repository.

Nothing here is seen by a campaign. Every frame starts from the large-pore cell relaxed by
GFN1-xTB (``recipes/structures/mil53_al_lp_gfn1.extxyz``, 76 atoms) and carries
``info["subset"]`` and GFN1-xTB's (tblite) energy, forces and stress:

* ``npt``: full-cell NPT MD with GFN1-xTB itself (ASE's ``MTKNPT``, ``timestep`` fs) at each
  (T K, P GPa) of ``conditions``; after ``equilibrate`` steps one frame every ``md_every``
  steps, ``md_frames`` per condition;
* ``path``: the breathing path. The narrow pore is found by squeezing the large-pore cell along
  the breathing strain (b by ``squeeze[0]``, c by ``squeeze[1]``, fractional coordinates kept)
  and relaxing positions and cell with GFN1-xTB (ASE's ``FrechetCellFilter``; it must land below
  ``narrow_volume`` A^3 or the set is not made). At each fraction f of ``path_points`` the cell
  is ``(1 - f) h_lp + f h_np`` and the fractional coordinates are interpolated the same way
  (minimum image), positions are relaxed at that fixed cell, and ``path_frames`` copies rattled
  by ``rattle`` A are labelled (f = 1: the narrow pore itself);
* ``strain``: the large-pore cell scaled isotropically by each linear strain of ``strains`` and
  sheared by +-``shear`` in the a-b plane, rattled.

The cache file's name carries the content hash of :class:`TestSetSpec` (:mod:`harness.testsets`).
GFN1-xTB takes about 2 s per frame of this cell on one core, so the default set is about half an
hour of reference calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.io import read
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from harness import cells

NAME = "mil53_test"
LARGE_PORE = Path(__file__).resolve().parents[1] / "recipes/structures/mil53_al_lp_gfn1.extxyz"


@dataclass(frozen=True)
class TestSetSpec:
    """What the test set holds (module docstring); temperatures K, pressures GPa, lengths A."""

    __test__ = False

    conditions: tuple[tuple[float, float], ...] = ((300.0, 0.0), (600.0, 0.0))
    md_frames: int = 8
    md_every: int = 20
    equilibrate: int = 100
    timestep: float = 1.0
    squeeze: tuple[float, float] = (1.14, 0.584)
    narrow_volume: float = 1200.0
    path_points: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    path_frames: int = 2
    strains: tuple[float, ...] = (-0.04, 0.04)
    shear: float = 0.03
    rattle: float = 0.03
    fmax: float = 0.05
    seed: int = 0


QUICK = TestSetSpec(
    conditions=((300.0, 0.0),), md_frames=3, equilibrate=10, md_every=5, path_points=(0.5,)
)


def gfn1():
    from tblite.ase import TBLite

    return TBLite(method="GFN1-xTB", verbosity=0)


def large_pore() -> Atoms:
    """The GFN1-xTB-relaxed large-pore cell, bare."""
    atoms = read(LARGE_PORE)
    return Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)


def labelled(atoms: Atoms, subset: str) -> Atoms:
    """A bare copy of ``atoms`` with GFN1-xTB's energy, forces and stress attached."""
    return cells.labelled(atoms, gfn1(), subset)


def narrow_pore(spec: TestSetSpec, lp: Atoms) -> Atoms:
    """The narrow pore of GFN1-xTB, relaxed from the squeezed large pore (module docstring)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = lp.copy()
    b, c = spec.squeeze
    atoms.set_cell(lp.cell.array @ np.diag([1.0, b, c]), scale_atoms=True)
    atoms.calc = gfn1()
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=spec.fmax, steps=400)
    if atoms.get_volume() > spec.narrow_volume:
        raise RuntimeError(
            f"the squeezed MIL-53 cell relaxed back to {atoms.get_volume():.0f} A^3, not a "
            f"narrow pore (< {spec.narrow_volume:g} A^3): change TestSetSpec.squeeze"
        )
    return Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)


def between(lp: Atoms, np_: Atoms, f: float) -> Atoms:
    """Cell and fractional coordinates a fraction ``f`` of the way from ``lp`` to ``np_``."""
    s_lp, s_np = lp.get_scaled_positions(), np_.get_scaled_positions()
    step = s_np - s_lp
    step -= np.round(step)
    cell = (1.0 - f) * lp.cell.array + f * np_.cell.array
    atoms = Atoms(lp.numbers, cell=cell, pbc=True)
    atoms.set_scaled_positions(s_lp + f * step)
    return atoms


def path_frames(spec: TestSetSpec, say=print) -> list[Atoms]:
    """The breathing path's frames (module docstring)."""
    from ase.optimize import BFGS

    rng = np.random.default_rng(spec.seed)
    lp = large_pore()
    np_ = narrow_pore(spec, lp)
    say(f"test set: narrow pore {np_.get_volume():.0f} A^3 (large pore {lp.get_volume():.0f})")
    frames = []
    for f in spec.path_points:
        atoms = np_.copy() if f == 1.0 else between(lp, np_, f)
        atoms.calc = gfn1()
        if f != 1.0:
            BFGS(atoms, logfile=None).run(fmax=2 * spec.fmax, steps=100)
        for _ in range(spec.path_frames):
            frame = atoms.copy()
            frame.positions += rng.normal(scale=spec.rattle, size=frame.positions.shape)
            frames.append(labelled(frame, "path"))
    return frames


def npt_frames(spec: TestSetSpec, temperature: float, pressure: float, seed: int) -> list[Atoms]:
    """``md_frames`` frames of full-cell MTK NPT MD with GFN1-xTB at (T K, P GPa)."""
    from ase.md.nose_hoover_chain import MTKNPT

    atoms = large_pore()
    atoms.calc = gfn1()
    thermalize_momenta(atoms, temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    dt = spec.timestep * units.fs
    md = MTKNPT(atoms, dt, temperature, pressure * units.GPa, tdamp=100 * dt, pdamp=1000 * dt)
    md.run(spec.equilibrate)
    frames = []
    for _ in range(spec.md_frames):
        md.run(spec.md_every)
        frames.append(labelled(atoms, "npt"))
    return frames


def strained_frames(spec: TestSetSpec) -> list[Atoms]:
    """The isotropically strained and the sheared cells, rattled."""
    rng = np.random.default_rng(spec.seed + 1)
    base = large_pore()
    label = partial(labelled, subset="strain")
    return cells.strained_cells(base, spec.strains, spec.shear, spec.rattle, rng, label)


def make(spec: TestSetSpec, say=print) -> list[Atoms]:
    """Every frame of the test set (module docstring)."""
    frames = strained_frames(spec) + path_frames(spec, say)
    say("test set: strained cells and breathing path done")
    for k, (temperature, pressure) in enumerate(spec.conditions):
        frames.extend(npt_frames(spec, temperature, pressure, seed=spec.seed * 100 + k))
        say(f"test set: NPT MD at {temperature:g} K, {pressure:g} GPa done")
    return frames
