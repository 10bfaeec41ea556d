"""A held-out GFN2-xTB test set of alanine dipeptide, generated once and cached outside the repo.

Nothing here is ever seen by a campaign (no training, early stopping or calibration on it).
Every frame carries ``info["subset"]``:

* ``md300``, ``md600``, ``md1200``: Langevin MD driven by GFN2-xTB itself (0.5 fs, friction
  0.01/fs) from the xTB-relaxed structure; after ``equilibrate`` steps, one frame every
  ``md_every`` steps, ``md_frames`` per temperature;
* ``rama``: a ``grid`` x ``grid`` grid of (phi, psi) cell centres over the whole Ramachandran
  plane: the relaxed structure with its backbone dihedrals set to the grid point (rotating the
  side of the molecule beyond the bond), relaxed by xTB with phi and psi held fixed
  (``ase.constraints.FixInternals``, BFGS, at most ``relax_steps``), then thermalised for
  ``thermalise_steps`` Langevin steps at ``thermalise_temperature`` with the dihedrals still
  held. Labels are xTB's unconstrained energy and forces of the final geometry.

The cache file's name carries the content hash of the :class:`TestSetSpec`
(:mod:`harness.testsets`), so changing a setting makes a new file and never mixes sets. A grid
point whose xTB calculation fails is skipped and counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from harness import testsets

DEFAULT_CACHE = testsets.DEFAULT_CACHE


@dataclass(frozen=True)
class TestSetSpec:
    """What the test set holds (see the module docstring); temperatures in K, steps of 0.5 fs."""

    md_temperatures: tuple[float, ...] = (300.0, 600.0, 1200.0)
    md_frames: int = 24
    md_every: int = 40
    equilibrate: int = 400
    grid: int = 8
    relax_steps: int = 40
    thermalise_steps: int = 40
    thermalise_temperature: float = 300.0
    seed: int = 0

    def key(self) -> str:
        return testsets.content_key(self)


#: Stem of the cache file: ``<cache>/alanine_dipeptide_test_<spec key>.extxyz``.
NAME = "alanine_dipeptide_test"
QUICK = TestSetSpec(md_frames=10, equilibrate=200, grid=6, relax_steps=20, thermalise_steps=20)


def xtb():
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def labelled(atoms: Atoms, **info) -> Atoms:
    """A bare copy of ``atoms`` labelled by xTB (energy eV, forces eV/A), with ``info``."""
    frame = Atoms(atoms.numbers, atoms.positions)
    frame.calc = xtb()
    energy, forces = frame.get_potential_energy(), frame.get_forces()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    frame.info.update(info)
    return frame


def relaxed_start() -> Atoms:
    """Alanine dipeptide (the campaigns' built-in start) relaxed by GFN2-xTB."""
    from ase.optimize import BFGS

    from uq_bias.campaign.systems import builtin

    atoms = builtin("alanine_dipeptide")[0]
    atoms.calc = xtb()
    BFGS(atoms, logfile=None).run(fmax=0.02, steps=300)
    return atoms


def md_frames(start: Atoms, temperature: float, spec: TestSetSpec) -> list[Atoms]:
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    rng = np.random.default_rng([spec.seed, int(temperature)])
    atoms = start.copy()
    atoms.calc = xtb()
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    md = Langevin(
        atoms,
        0.5 * units.fs,
        temperature_K=temperature,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=rng,
    )
    from tqdm import tqdm

    total = spec.equilibrate + spec.md_frames * spec.md_every
    bar = tqdm(total=total, desc=f"test set: xTB MD at {temperature:g} K", unit="step", leave=False)
    md.attach(lambda: bar.update(1), interval=1)
    md.run(spec.equilibrate)
    frames = []
    for _ in range(spec.md_frames):
        md.run(spec.md_every)
        frames.append(labelled(atoms, subset=f"md{int(temperature)}"))
    bar.close()
    return frames


def moving_side(atoms: Atoms, axis_from: int, axis_to: int) -> list[int]:
    """Atoms on ``axis_to``'s side of the bond axis_from-axis_to (the part a dihedral rotates)."""
    from uq_bias.campaign.systems import _bonds

    bonds = _bonds(atoms)
    seen, todo = {axis_to}, deque([axis_to])
    while todo:
        i = todo.popleft()
        for j in bonds[i]:
            if j not in seen and not (i == axis_to and j == axis_from):
                seen.add(j)
                todo.append(j)
    if axis_from in seen:
        raise ValueError(f"the bond {axis_from}-{axis_to} is in a ring; cannot rotate one side")
    return sorted(seen)


def grid_frame(start: Atoms, phi: float, psi: float, spec: TestSetSpec, rng) -> Atoms:
    """One ``rama`` frame at the grid point (phi, psi) in degrees."""
    from ase.constraints import FixInternals
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import BFGS

    from uq_bias.campaign.systems import backbone

    quad_phi, quad_psi = backbone(start)
    masks = [_mask(start, quad_phi), _mask(start, quad_psi)]  # from the unrotated bond graph
    atoms = start.copy()
    atoms.set_dihedral(*quad_phi, phi % 360, mask=masks[0])
    atoms.set_dihedral(*quad_psi, psi % 360, mask=masks[1])
    fixed = [[float(phi % 360), list(quad_phi)], [float(psi % 360), list(quad_psi)]]
    atoms.set_constraint(FixInternals(dihedrals_deg=fixed))
    atoms.calc = xtb()
    BFGS(atoms, logfile=None).run(fmax=0.1, steps=spec.relax_steps)
    MaxwellBoltzmannDistribution(atoms, temperature_K=spec.thermalise_temperature, rng=rng)
    md = Langevin(
        atoms,
        0.5 * units.fs,
        temperature_K=spec.thermalise_temperature,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=rng,
    )
    md.run(spec.thermalise_steps)
    return labelled(atoms, subset="rama", phi_target=float(phi), psi_target=float(psi))


def _mask(atoms: Atoms, quad) -> list[bool]:
    side = set(moving_side(atoms, quad[1], quad[2]))
    return [i in side for i in range(len(atoms))]


def make(spec: TestSetSpec, say=print) -> list[Atoms]:
    """Generate the test set of ``spec`` (minutes on one core)."""
    start = relaxed_start()
    frames = []
    for temperature in spec.md_temperatures:
        frames += md_frames(start, temperature, spec)
        say(f"test set: {len(frames)} MD frames (up to {temperature:g} K)")
    centres = -180.0 + (np.arange(spec.grid) + 0.5) * 360.0 / spec.grid
    rng = np.random.default_rng([spec.seed, 7])
    failed = 0
    for phi in centres:
        for psi in centres:
            try:
                frames.append(grid_frame(start, phi, psi, spec, rng))
            except Exception as err:  # noqa: BLE001 - xTB SCF failures and ASE constraint errors
                failed += 1
                say(f"test set: grid point ({phi:.1f}, {psi:.1f}) skipped: {err}")
        say(f"test set: {sum(a.info['subset'] == 'rama' for a in frames)} Ramachandran frames")
    if failed:
        say(f"test set: {failed} of {spec.grid**2} grid points failed and were skipped")
    return frames


def load_or_make(spec: TestSetSpec, cache: Path = DEFAULT_CACHE, say=print) -> tuple[list, Path]:
    """The cached test set of ``spec`` (made and written atomically on first use), and its path."""
    return testsets.load_or_make(NAME, spec, make, cache, say)
