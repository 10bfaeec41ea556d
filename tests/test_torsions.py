"""Backbone torsions from the bond graph, against RDKit's strict rotatable-bond count and
hand-counted molecules."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from uq_bias.torsions import backbone_torsions, dihedrals, rotatable_bonds

#: RDKit's strict rotatable-bond count on the molecule without hydrogens (heavy atoms only, so
#: methyl and hydroxyl rotors, which spin hydrogens, are not counted) is the reference.
MOLECULES = [
    "CCCC",  # butane: 1
    "C1CCCCC1",  # cyclohexane: 0 (ring)
    "CC(=O)NC(C)C(=O)NC",  # alanine dipeptide: phi, psi (amide C-N excluded)
    "COCCOCCOCCOCCOC",  # PEG: 12
    "CCO",  # ethanol: the hydroxyl rotor only: 0
    "CCOC(=O)C",  # ethyl acetate: the ester C-O is not counted
    "c1ccccc1CCN",  # phenethylamine
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",  # ibuprofen
    "CCCCCCCC",  # octane: 5
    "CC#CCC",  # an alkyne: no torsion through the linear carbons
    "CCSCC",  # diethyl sulfide: 2
    "C=CCC",  # 1-butene: 1
]


def embedded(smiles: str) -> tuple[Atoms, object]:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=1) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    atoms = Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], mol.GetConformer().GetPositions())
    return atoms, mol


@pytest.mark.parametrize("smiles", MOLECULES)
def test_rotatable_bonds_match_rdkit_strict_count_on_heavy_atoms(smiles):
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    atoms, mol = embedded(smiles)
    expected = rdMolDescriptors.CalcNumRotatableBonds(Chem.RemoveHs(mol), strict=True)
    assert len(rotatable_bonds(atoms)) == expected


def test_hand_counted_molecules():
    counts = {"CCCC": 1, "C1CCCCC1": 0, "COCCOCCOCCOCCOC": 12, "CCO": 0, "CCCCCCCC": 5}
    for smiles, n in counts.items():
        assert len(backbone_torsions(embedded(smiles)[0])) == n, smiles


def test_alanine_dipeptide_gives_its_phi_and_psi():
    """The built-in alanine dipeptide: the torsions are exactly the backbone phi (C-N-CA-C')
    and psi (N-CA-C'-N') that the peptide finder of campaign.systems picks."""
    from uq_bias.campaign.systems import backbone, builtin

    atoms = builtin("alanine_dipeptide")[0]
    assert [tuple(int(i) for i in q) for q in backbone(atoms)] == backbone_torsions(atoms)


def test_butane_torsion_is_its_carbon_chain():
    atoms, _ = embedded("CCCC")
    ((i, j, k, m),) = backbone_torsions(atoms)
    assert all(atoms.numbers[[i, j, k, m]] == 6)
    # the dihedral value is ASE's, folded into (-180, 180]
    expected = atoms.get_dihedral(i, j, k, m)
    expected = expected - 360 if expected > 180 else expected
    np.testing.assert_allclose(dihedrals(atoms, [(i, j, k, m)]), [expected])


def test_periodic_structure_has_no_torsion():
    assert backbone_torsions(bulk("Cu", cubic=True)) == []
    assert rotatable_bonds(bulk("Si")) == []
