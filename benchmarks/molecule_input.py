"""The molecule of ``exploration.py --structure FILE`` or ``--smiles``: read, checked, relaxed.

Every check runs before the benchmark writes anything, and a failure is a :class:`InputError`
that names the input, what is wrong and what is expected:

* ``--structure``: any file ASE reads (the first structure is taken); a periodic structure is
  refused (the benchmark is for molecules), and so is a file ASE cannot read;
* ``--smiles``: a SMILES RDKit accepts; the molecule gets its hydrogens and one ETKDG
  conformer (seed 0), relaxed by MMFF94 where MMFF knows every atom;
* either way the molecule needs at least one backbone torsion (:mod:`uq_bias.torsions`), the
  collective variables whose coverage the benchmark measures.

The campaigns start from the molecule relaxed by GFN2-xTB (BFGS to 0.02 eV/A, at most 300
steps): a start near equilibrium, where the default ``max_energy_drop_kt`` (a fall 2 k_B T/atom
below the first frame stops a walker) means a hole of the model, not the walker relaxing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from ase import Atoms


class InputError(ValueError):
    """A molecule the benchmark cannot use; the message says why and what is expected."""


def from_file(path: Path) -> Atoms:
    """The first structure in ``path`` (any format ASE reads)."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--structure {str(path)!r}: no such file")
    try:
        atoms = read(path, index=0)
    except Exception as err:  # noqa: BLE001 - ASE raises many kinds for an unreadable file
        raise InputError(
            f"--structure {str(path)!r}: ASE cannot read it ({type(err).__name__}: {err}); give "
            "a file in a format ASE reads (xyz, extxyz, pdb, sdf, cif, ...)"
        ) from err
    if not isinstance(atoms, Atoms) or not len(atoms):
        raise InputError(f"--structure {str(path)!r}: the file holds no atoms")
    if atoms.pbc.any():
        raise InputError(
            f"--structure {str(path)!r}: the structure is periodic (pbc {atoms.pbc.tolist()}); "
            "this benchmark measures coverage of a molecule's torsions: give a molecule"
        )
    return Atoms(atoms.numbers, atoms.positions)


def from_smiles(smiles: str) -> Atoms:
    """The molecule of ``smiles`` with hydrogens, one RDKit conformer (ETKDG, seed 0, MMFF)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")  # the error below says what RDKit would print
    mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
    if mol is None:
        raise InputError(
            f"--smiles {smiles!r}: RDKit rejects it (not a valid SMILES); give one such as "
            "'COCCOCCOCCOCCOC'"
        )
    mol = Chem.AddHs(mol)
    if AllChem.EmbedMolecule(mol, randomSeed=0) != 0:
        raise InputError(f"--smiles {smiles!r}: RDKit could not embed a 3D conformer")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return Atoms(numbers, mol.GetConformer().GetPositions())


def checked(atoms: Atoms, what: str) -> Atoms:
    """``atoms`` if it has a backbone torsion; InputError naming ``what`` otherwise."""
    from uq_bias.torsions import backbone_torsions

    if not backbone_torsions(atoms):
        raise InputError(
            f"{what}: the molecule ({atoms.get_chemical_formula()}) has no backbone torsion "
            "(a rotatable bond between heavy atoms with heavy neighbours on both sides, not in a "
            "ring), so there is no torsion space to cover; give a flexible molecule"
        )
    return atoms


def molecule(structure: Path | None, smiles: str | None) -> tuple[Atoms, str, str]:
    """(the molecule, a short name for folders, the input's words) of the command line."""
    if structure is not None:
        atoms = checked(from_file(structure), f"--structure {str(structure)!r}")
        return atoms, Path(structure).stem, f"structure {structure}"
    atoms = checked(from_smiles(smiles), f"--smiles {smiles!r}")
    digest = hashlib.sha1(smiles.encode()).hexdigest()[:6]
    return atoms, f"{atoms.get_chemical_formula()}_{digest}", f"SMILES {smiles}"


def relaxed(atoms: Atoms, cache: Path) -> Atoms:
    """``atoms`` relaxed by GFN2-xTB, cached in ``cache`` by the hash of its input geometry."""
    from alanine_test_set import xtb
    from ase.optimize import BFGS

    from uq_bias.campaign.state import read_frames, write_frames

    text = np.array2string(np.round(atoms.positions, 5)) + str(atoms.numbers.tolist())
    path = Path(cache).expanduser() / f"relaxed_{hashlib.sha1(text.encode()).hexdigest()[:10]}.xyz"
    if path.is_file():
        return read_frames(path)[0]
    out = atoms.copy()
    out.calc = xtb()
    BFGS(out, logfile=None).run(fmax=0.02, steps=300)
    out = Atoms(out.numbers, out.positions)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_frames(path, [out])
    return out
