"""Built-in systems and backbone dihedrals, checked against RDKit's own dihedrals."""

from __future__ import annotations

import numpy as np
import pytest

from uq_bias.campaign.systems import ALANINE_DIPEPTIDE_SMILES, backbone, builtin, dihedral


def test_alanine_dipeptide_dihedrals_match_rdkit():
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolTransforms

    atoms = builtin("alanine_dipeptide")[0]
    assert atoms.get_chemical_formula() == "C6H12N2O2" and not atoms.pbc.any()
    mol = Chem.AddHs(Chem.MolFromSmiles(ALANINE_DIPEPTIDE_SMILES))
    params = AllChem.ETKDGv3()
    params.randomSeed = 0
    AllChem.EmbedMolecule(mol, params)
    AllChem.MMFFOptimizeMolecule(mol)
    conf = mol.GetConformer()
    # SMILES order: C0 C1(=O2) N3 CA4(C5) C6(=O7) N8 C9; phi = C1-N3-CA4-C6, psi = N3-CA4-C6-N8
    phi, psi = backbone(atoms)
    assert dihedral(atoms, phi) == pytest.approx(rdMolTransforms.GetDihedralDeg(conf, 1, 3, 4, 6))
    assert dihedral(atoms, psi) == pytest.approx(rdMolTransforms.GetDihedralDeg(conf, 3, 4, 6, 8))


def test_backbone_found_whatever_the_atom_order():
    atoms = builtin("alanine_dipeptide")[0]
    order = np.random.default_rng(1).permutation(len(atoms))
    shuffled = atoms[order]
    phi, psi = backbone(shuffled)
    reference_phi, reference_psi = backbone(atoms)
    assert dihedral(shuffled, phi) == pytest.approx(dihedral(atoms, reference_phi))
    assert dihedral(shuffled, psi) == pytest.approx(dihedral(atoms, reference_psi))


def test_no_backbone_in_metals_and_cells():
    cual = builtin("cual_fcc")[0]
    assert backbone(cual) is None
    assert len(cual) == 32 and (cual.numbers == 13).sum() == 8 and cual.pbc.all()
    with pytest.raises(ValueError, match="unknown built-in system 'water'"):
        builtin("water")
