"""A held-out GFN2-xTB test set of any molecule, generated once and cached outside the repo.

The any-molecule counterpart of ``alanine_test_set.py`` (same MD frames, and frames spread
over the molecule's backbone torsions in place of the Ramachandran grid). Nothing here is ever
seen by a campaign. Every frame carries ``info["subset"]``:

* ``md300``, ``md600``, ``md1200``: Langevin MD driven by GFN2-xTB itself (0.5 fs, friction
  0.01/fs) from the xTB-relaxed start; after ``equilibrate`` steps, one frame every
  ``md_every`` steps, ``md_frames`` per temperature;
* ``conf``: ``conformers`` frames spread over torsion space: RDKit ETKDG embeds
  ``pool`` x ``conformers`` conformers of the molecule (same atom order as the start), and
  farthest-point sampling in torsion space (distance: the root mean square over the T backbone
  torsions of the periodic angle difference) keeps ``conformers`` of them, starting from the one
  farthest from the start; each is relaxed by MMFF94 (RDKit, which keeps it in its torsional
  basin), then by xTB (BFGS, at most ``relax_steps``, to 0.1 eV/A) and thermalised for
  ``thermalise_steps`` Langevin steps of xTB MD at ``thermalise_temperature``. Holding all
  torsions with ``ase.constraints.FixInternals`` (as the alanine set holds phi and psi) does not
  converge with a dozen coupled dihedrals (PEG: every conformer failed), so the torsions are
  free: short relaxation and MD keep each frame near its conformer's basin.

The spec holds the molecule itself (atomic numbers and start positions), so its content hash
(:mod:`harness.testsets`) names one file per molecule and setting. A conformer whose xTB
calculation fails is skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from alanine_test_set import labelled, md_frames, xtb
from ase import Atoms, units
from harness import testsets

DEFAULT_CACHE = testsets.DEFAULT_CACHE
NAME = "molecule_test"


@dataclass(frozen=True)
class MoleculeSpec:
    """What the test set holds (see the module docstring); temperatures in K, steps of 0.5 fs.
    ``numbers`` and ``positions`` (A, rounded to 1e-5) are the xTB-relaxed start."""

    numbers: tuple[int, ...]
    positions: tuple[tuple[float, float, float], ...]
    md_temperatures: tuple[float, ...] = (300.0, 600.0, 1200.0)
    md_frames: int = 24
    md_every: int = 40
    equilibrate: int = 400
    conformers: int = 64
    pool: int = 4
    relax_steps: int = 40
    thermalise_steps: int = 40
    thermalise_temperature: float = 300.0
    seed: int = 0

    @classmethod
    def of(cls, start: Atoms, quick: bool = False) -> MoleculeSpec:
        """The spec of the molecule ``start``; ``quick``: a small set for ``--quick``."""
        positions = tuple(tuple(round(float(x), 5) for x in row) for row in start.positions)
        numbers = tuple(int(z) for z in start.numbers)
        if not quick:
            return cls(numbers, positions)
        return cls(
            numbers,
            positions,
            md_frames=6,
            md_every=20,
            equilibrate=100,
            conformers=12,
            relax_steps=10,
            thermalise_steps=10,
        )

    @property
    def start(self) -> Atoms:
        return Atoms(self.numbers, np.array(self.positions))

    def key(self) -> str:
        return testsets.content_key(self)


def torsion_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS over torsions of the periodic difference (degrees) between ``a`` (T,) and each row of
    ``b`` (M, T)."""
    delta = np.abs((np.asarray(b) - np.asarray(a) + 180.0) % 360.0 - 180.0)
    return np.sqrt(np.mean(delta**2, axis=-1))


def spread(torsions: np.ndarray, start: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` rows of ``torsions`` (M, T) by farthest-point sampling, the first the
    farthest from ``start`` (T,)."""
    nearest = torsion_distance(start, torsions)
    chosen: list[int] = []
    for _ in range(min(n, len(torsions))):
        k = int(np.argmax(nearest))
        chosen.append(k)
        nearest = np.minimum(nearest, torsion_distance(torsions[k], torsions))
        nearest[chosen] = -1.0
    return chosen


def rdkit_molecule(start: Atoms):
    """An RDKit molecule with hydrogens in the atom order of ``start``, bonds from its geometry
    (``rdDetermineBonds``, neutral)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    block = f"{len(start)}\n\n" + "".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}\n"
        for s, (x, y, z) in zip(start.get_chemical_symbols(), start.positions)
    )
    mol = Chem.MolFromXYZBlock(block)
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except ValueError:
        rdDetermineBonds.DetermineConnectivity(mol)
    return mol


def conformer_frames(start: Atoms, spec: MoleculeSpec, say=print) -> list[Atoms]:
    """The ``conf`` frames of the module docstring."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.optimize import BFGS
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from tqdm import tqdm

    from uq_bias.torsions import backbone_torsions, dihedrals

    quads = backbone_torsions(start)
    mol = rdkit_molecule(start)
    # one embedding per seed: EmbedMultipleConfs with a fixed randomSeed gave 48 copies of one
    # conformer here (RDKit on this machine)
    mols = []
    for i in range(spec.pool * spec.conformers):
        copy = Chem.Mol(mol)
        if AllChem.EmbedMolecule(copy, randomSeed=1000 * spec.seed + i) == 0:
            mols.append(copy)
    if not mols:
        raise ValueError("RDKit could not embed a conformer of the molecule")
    shapes = [Atoms(start.numbers, m.GetConformer().GetPositions()) for m in mols]
    angles = np.array([dihedrals(a, quads) for a in shapes])
    chosen = spread(angles, dihedrals(start, quads), spec.conformers)
    mmff = AllChem.MMFFHasAllMoleculeParams(mols[0])
    rng = np.random.default_rng([spec.seed, 7])
    frames, failed = [], 0
    for k in tqdm(chosen, desc="test set: conformers", leave=False):
        try:
            if mmff:
                AllChem.MMFFOptimizeMolecule(mols[k], maxIters=500)
            atoms = Atoms(start.numbers, mols[k].GetConformer().GetPositions())
            atoms.calc = xtb()
            BFGS(atoms, logfile=None).run(fmax=0.1, steps=spec.relax_steps)
            thermalize_momenta(atoms, spec.thermalise_temperature, rng=rng)
            Langevin(
                atoms,
                0.5 * units.fs,
                temperature_K=spec.thermalise_temperature,
                friction=0.01 / units.fs,
                fixcm=False,
                rng=rng,
            ).run(spec.thermalise_steps)
            frames.append(labelled(atoms, subset="conf"))
        except Exception as err:  # noqa: BLE001 - xTB SCF failures
            failed += 1
            say(f"test set: conformer {k} skipped: {err}")
    say(f"test set: {len(frames)} conformer frames ({failed} failed)")
    if not frames:
        raise RuntimeError(f"test set: all {len(chosen)} conformers failed; nothing cached")
    return frames


def make(spec: MoleculeSpec, say=print) -> list[Atoms]:
    """Generate the test set of ``spec`` (minutes on one core)."""
    start = spec.start
    conformers = conformer_frames(start, spec, say)  # first: it fails fast, MD does not
    frames = []
    for temperature in spec.md_temperatures:
        frames += md_frames(start, temperature, spec)
        say(f"test set: {len(frames)} MD frames (up to {temperature:g} K)")
    return frames + conformers
