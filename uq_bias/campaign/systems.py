"""Start structures: read from a file, or built in (``builtin:NAME``).

Built-in systems:

* ``alanine_dipeptide``: Ace-Ala-NMe (CC(=O)NC(C)C(=O)NC, 22 atoms) embedded by RDKit's ETKDG
  with a fixed seed and relaxed with MMFF, in a non-periodic box;
* ``cu_fcc``: a 2x2x2 cubic fcc Cu cell (32 atoms, a = 3.61 A), periodic;
* ``cual_fcc``: the same cell with every fourth atom Al.

The backbone dihedrals phi (C-N-CA-C) and psi (N-CA-C-N) of a peptide are found from the bond
graph (ASE's natural cutoffs), so frames from any file work, whatever their atom order.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

ALANINE_DIPEPTIDE_SMILES = "CC(=O)NC(C)C(=O)NC"
BUILTINS = ("alanine_dipeptide", "cu_fcc", "cual_fcc")


def from_smiles(smiles: str, seed: int = 0) -> Atoms:
    """A 3D structure of ``smiles`` with hydrogens (RDKit ETKDG + MMFF, fixed ``seed``)."""
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("building from SMILES needs RDKit: `pip install uq_bias[chem]`") from err
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError(f"RDKit could not embed {smiles!r} in 3D")
    AllChem.MMFFOptimizeMolecule(mol)
    positions = mol.GetConformer().GetPositions()
    numbers = [atom.GetAtomicNum() for atom in mol.GetAtoms()]
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.center()
    return atoms


def builtin(name: str) -> list[Atoms]:
    """The built-in start structures called ``name`` (see the module docstring)."""
    from ase.build import bulk

    if name == "alanine_dipeptide":
        return [from_smiles(ALANINE_DIPEPTIDE_SMILES, seed=0)]
    if name in ("cu_fcc", "cual_fcc"):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        if name == "cual_fcc":
            atoms.numbers[::4] = 13
        return [atoms]
    raise ValueError(f"unknown built-in system {name!r}; choose one of {list(BUILTINS)}")


def read_structures(spec: str, path=None) -> list[Atoms]:
    """Start structures from ``builtin:NAME`` or from the file ``path`` (any ASE format)."""
    if spec.startswith("builtin:"):
        return builtin(spec.split(":", 1)[1])
    from uq_bias.io_structures import read_structures as read_file

    if path is None:
        raise FileNotFoundError(f"start structures {spec!r}: no file given")
    frames = read_file(path, "start structures (data.structures)")
    for atoms in frames:
        atoms.calc = None
    return frames


def _bonds(atoms: Atoms) -> list[set[int]]:
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=True)
    nl.update(atoms)
    return [set(nl.get_neighbors(i)[0].tolist()) for i in range(len(atoms))]


def backbone(atoms: Atoms) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """Atom indices of phi = (C, N, CA, C') and psi = (N, CA, C', N') of the first residue
    found, or None if ``atoms`` has no peptide backbone C(=O)-N-CA-C(=O)-N."""
    bonds = _bonds(atoms)
    z = atoms.numbers

    def carbonyl(i: int) -> bool:
        return (
            z[i] == 6
            and len(bonds[i]) == 3
            and any(z[j] == 8 and len(bonds[j]) == 1 for j in bonds[i])
        )

    for ca in np.flatnonzero((z == 6) & np.array([len(b) == 4 for b in bonds])):
        for n in (j for j in bonds[ca] if z[j] == 7):
            for c2 in (j for j in bonds[ca] if carbonyl(j)):
                for c1 in (j for j in bonds[n] if j != ca and carbonyl(j)):
                    for n2 in (j for j in bonds[c2] if z[j] == 7):
                        return (c1, n, int(ca), c2), (n, int(ca), c2, n2)
    return None


def dihedral(atoms: Atoms, quad) -> float:
    """The dihedral angle of four atoms in degrees, in (-180, 180]."""
    angle = atoms.get_dihedral(*quad)
    return float(angle - 360.0 if angle > 180.0 else angle)
