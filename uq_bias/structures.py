"""Built-in starting structures for demos, recipes, tests and benchmarks."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk

#: Ace-Ala-NMe (alanine dipeptide), 22 atoms, the system of the uncertainty-biased MD paper.
ALANINE_DIPEPTIDE_SMILES = "CC(=O)NC(C)C(=O)NC"


def from_smiles(smiles: str, seed: int = 0) -> Atoms:
    """A 3D molecule from SMILES with hydrogens, embedded by RDKit (ETKDG) and relaxed with MMFF.

    Needs the ``chem`` extra (rdkit).
    """
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "building molecules from SMILES needs `pip install uq_bias[chem]`"
        ) from err
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        raise ValueError(f"RDKit could not parse the SMILES {smiles!r}")
    molecule = Chem.AddHs(molecule)
    if AllChem.EmbedMolecule(molecule, randomSeed=seed) != 0:
        raise ValueError(f"RDKit could not embed {smiles!r} in 3D (seed {seed})")
    AllChem.MMFFOptimizeMolecule(molecule)
    positions = molecule.GetConformer().GetPositions()
    numbers = [atom.GetAtomicNum() for atom in molecule.GetAtoms()]
    return Atoms(numbers=numbers, positions=np.asarray(positions))


def alanine_dipeptide(seed: int = 0) -> Atoms:
    """Alanine dipeptide (22 atoms) in vacuum."""
    return from_smiles(ALANINE_DIPEPTIDE_SMILES, seed=seed)


def cu_al_cell(size: int = 3, al_fraction: float = 0.25, seed: int = 0) -> Atoms:
    """A cubic fcc Cu cell repeated ``size`` times per axis (4 size^3 atoms), a random
    ``al_fraction`` of the sites Al; lattice constant 3.61 A."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (size, size, size)
    rng = np.random.default_rng(seed)
    n_al = int(round(al_fraction * len(atoms)))
    atoms.numbers[rng.choice(len(atoms), size=n_al, replace=False)] = 13
    return atoms
