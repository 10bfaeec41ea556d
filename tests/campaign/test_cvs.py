"""CV declarations: values against geometry built by hand, clear errors for bad declarations."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from uq_bias.campaign import config as cfg
from uq_bias.campaign import cvs
from uq_bias.campaign.cvs import CollectiveVariable


def chain(angle_deg: float) -> Atoms:
    """Four atoms with bonds along x and a dihedral of ``angle_deg`` about the 1-2 axis."""
    a = np.radians(angle_deg)
    positions = [[0, 1, 0], [0, 0, 0], [1.5, 0, 0], [1.5, np.cos(a), np.sin(a)]]
    return Atoms("C4", positions=positions)


@pytest.mark.parametrize("angle", [-170.0, -60.0, 0.0, 60.0, 179.0])
def test_dihedral_and_distance_values(angle):
    atoms = chain(angle)
    phi = CollectiveVariable("phi", "dihedral", [0, 1, 2, 3])
    assert phi.value(atoms) == pytest.approx(angle, abs=1e-9)
    d = CollectiveVariable("d", "distance", [0, 3], range=[0.0, 5.0])
    expected = np.sqrt(
        1.5**2 + (np.cos(np.radians(angle)) - 1) ** 2 + np.sin(np.radians(angle)) ** 2
    )
    assert d.value(atoms) == pytest.approx(expected, abs=1e-12)


def test_box_defaults():
    assert CollectiveVariable("phi", "dihedral", [0, 1, 2, 3]).box == (-180.0, 180.0)
    shifted = CollectiveVariable("phi", "dihedral", [0, 1, 2, 3], range=[0.0, 360.0])
    assert shifted.box == (0.0, 360.0) and shifted.periodic
    assert not CollectiveVariable("d", "distance", [0, 1], range=[1, 2]).periodic


@pytest.mark.parametrize(
    "cv, message",
    [
        (dict(name="x", kind="angle", atoms=[0, 1, 2]), "unknown kind 'angle'"),
        (dict(name="x", kind="dihedral", atoms=[0, 1, 2, 22]), r"atom indices \[22\] out of range"),
        (dict(name="x", kind="dihedral", atoms=[0, 1, 2, -1]), r"atom indices \[-1\] out of range"),
        (dict(name="x", kind="dihedral", atoms=[0, 1, 2]), "needs 4 atom indices, got 3"),
        (dict(name="x", kind="distance", atoms=[0, 0], range=[0, 1]), "repeated"),
        (dict(name="x", kind="distance", atoms=[0, 1]), "needs range"),
        (dict(name="x", kind="dihedral", atoms=[0, 1, 2, 3], range=[0, 180]), "must span"),
        (dict(name="x", kind="dihedral", atoms=[0, 1, 2, 3], period=-1), "period must be"),
        (dict(kind="dihedral", atoms=[0, 1, 2, 3]), "give the CV a name"),
    ],
)
def test_bad_declarations_name_the_entry(cv, message):
    with pytest.raises(ValueError, match=message) as err:
        cvs.check([CollectiveVariable(**cv)], n_atoms=22)
    assert "report.cvs[0]" in str(err.value)


def test_yaml_declaration_is_checked_against_the_structures(tmp_path):
    from uq_bias.campaign.loop import _check_inputs

    data = {
        "data": {"structures": "builtin:alanine_dipeptide"},
        "report": {"cvs": [{"name": "phi", "kind": "dihedral", "atoms": [4, 6, 8, 30]}]},
    }
    config = cfg.from_dict(data, base_dir=tmp_path)
    assert config.report.cvs[0].atoms == [4, 6, 8, 30]
    with pytest.raises(cfg.ConfigError, match=r"report.cvs\[0\] \(phi\): atom indices \[30\]"):
        _check_inputs(config)
    with pytest.raises(cfg.ConfigError, match="report.cvs\\[0\\].atoms"):
        cfg.from_dict({**data, "report": {"cvs": [{"name": "x", "atoms": "1 2"}]}})


def test_backbone_cvs_of_alanine_dipeptide():
    from uq_bias.campaign.systems import builtin

    atoms = builtin("alanine_dipeptide")[0]
    found = cvs.backbone_cvs(atoms)
    assert [cv.name for cv in found] == ["phi", "psi"]
    numbers = atoms.numbers
    # phi = C(=O)-N-CA-C(=O), psi = N-CA-C(=O)-N
    assert [numbers[i] for i in found[0].atoms] == [6, 7, 6, 6]
    assert [numbers[i] for i in found[1].atoms] == [7, 6, 6, 7]
    assert cvs.backbone_cvs(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])) == []


def test_cell_cvs_against_closed_forms():
    """volume: V/N of the cell by hand; shear: 0 for a cube of any size and after a rotation,
    ||dev(eps)||_F to first order for a cube strained by a small symmetric eps."""
    from ase.build import bulk

    from uq_bias.campaign.cvs import CollectiveVariable, check

    volume = CollectiveVariable("v", "volume", [], range=[10.0, 18.0])
    shear = CollectiveVariable("s", "shear", [], range=[0.0, 0.1])
    cube = bulk("Cu", "fcc", a=3.6, cubic=True) * 2
    check([volume, shear], len(cube))
    assert volume.value(cube) == pytest.approx(7.2**3 / 32, rel=1e-12)
    assert shear.value(cube) == pytest.approx(0.0, abs=1e-14)
    big = cube.copy()
    big.set_cell(cube.cell.array * 1.07, scale_atoms=True)
    assert shear.value(big) == pytest.approx(0.0, abs=1e-14)
    eps = 1e-4 * np.array([[3.0, 2.0, -1.0], [2.0, -5.0, 4.0], [-1.0, 4.0, 1.0]])
    strained = cube.copy()
    strained.set_cell(cube.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    deviatoric = eps - np.trace(eps) / 3 * np.eye(3)
    assert shear.value(strained) == pytest.approx(np.linalg.norm(deviatoric), rel=1e-3)
    rotated = strained.copy()
    rotated.rotate(37, "z", rotate_cell=True)
    assert shear.value(rotated) == pytest.approx(shear.value(strained), rel=1e-10)


def test_cell_cvs_refuse_a_molecule():
    from ase.build import molecule

    from uq_bias.campaign.cvs import CollectiveVariable

    with pytest.raises(ValueError, match="periodic in all three"):
        CollectiveVariable("v", "volume", [], range=[1.0, 2.0]).value(molecule("H2O"))


def test_automatic_cvs_are_phi_psi_of_a_peptide_else_the_backbone_torsions():
    """Without declared CVs: alanine dipeptide gets phi and psi, a flexible molecule (butane)
    its one backbone torsion (C-C-C-C), a rigid one (methane) none; declared CVs and
    ``auto=False`` win."""
    from ase.build import molecule

    from uq_bias.campaign.explored import resolve_cvs
    from uq_bias.campaign.systems import builtin

    alanine = builtin("alanine_dipeptide")[0]
    assert [cv.name for cv in resolve_cvs([], [alanine])] == ["phi", "psi"]
    butane = molecule("trans-butane")
    (torsion,) = resolve_cvs([], [butane])
    assert torsion.kind == "dihedral" and all(butane.numbers[torsion.atoms] == 6)
    assert resolve_cvs([], [molecule("CH4")]) == []
    assert resolve_cvs([], [butane], auto=False) == []
    declared = [CollectiveVariable("d", "distance", [0, 1], range=[0.0, 3.0])]
    assert resolve_cvs(declared, [butane]) == declared
