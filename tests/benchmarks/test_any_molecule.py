"""``exploration.py --structure`` / ``--smiles``: bad input stops it with a message that names the
input, before anything is written; the alanine campaigns keep their old settings; the
spread-over-torsions sampling picks the farthest conformers."""

from __future__ import annotations

import exploration  # benchmarks/ on sys.path (conftest)
import numpy as np
import pytest
from ase.build import molecule
from ase.io import write


def _fails(argv, tmp_path, capsys) -> str:
    out, cache = tmp_path / "out", tmp_path / "cache"
    with pytest.raises(SystemExit) as stop:
        exploration.main([*argv, "--quick", "--out", str(out), "--cache", str(cache)])
    assert stop.value.code == 2
    assert not out.exists() and not cache.exists()  # nothing written
    return capsys.readouterr().err


def test_a_smiles_rdkit_rejects_is_a_clear_error(tmp_path, capsys):
    err = _fails(["--smiles", "C1CC("], tmp_path, capsys)
    assert "--smiles 'C1CC(': RDKit rejects it (not a valid SMILES)" in err


def test_a_file_ase_cannot_read_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "molecule.xyz"
    bad.write_text("three\nnot a count\nC 0 0 0\n")
    err = _fails(["--structure", str(bad)], tmp_path, capsys)
    assert f"--structure '{bad}': ASE cannot read it" in err
    err = _fails(["--structure", str(tmp_path / "missing.xyz")], tmp_path, capsys)
    assert "missing.xyz': no such file" in err


@pytest.mark.parametrize("smiles", ["C1CCCCC1", "CCO"])
def test_a_molecule_without_backbone_torsion_is_a_clear_error(tmp_path, capsys, smiles):
    err = _fails(["--smiles", smiles], tmp_path, capsys)
    assert "has no backbone torsion" in err and "give a flexible molecule" in err


def test_a_rigid_molecule_from_a_file_and_a_crystal_are_refused(tmp_path, capsys):
    from ase.build import bulk

    path = tmp_path / "benzene.xyz"
    write(path, molecule("C6H6"))
    assert "has no backbone torsion" in _fails(["--structure", str(path)], tmp_path, capsys)
    crystal = tmp_path / "cu.extxyz"
    write(crystal, bulk("Cu"))
    assert "the structure is periodic" in _fails(["--structure", str(crystal)], tmp_path, capsys)


def test_alanine_campaigns_spell_out_their_old_settings():
    """The alanine variants' bias and watchdog are those of the defaults before issue 23 plus
    the benchmark's own keys, so the package's new defaults leave its table unchanged."""
    from uq_bias.bias import BiasConfig
    from uq_bias.dynamics import WatchdogConfig
    from uq_bias.options import build

    size = exploration.DEFAULT
    biased = exploration.exploration(300.0, True, size)
    plain = exploration.exploration(300.0, False, size)
    bias, watchdog = build(BiasConfig, biased["bias"]), build(WatchdogConfig, biased["watchdog"])
    assert (bias.tau_rel, bias.project, bias.fade, bias.fade_range(300.0)) == (
        0.1,
        "torsions",
        [0.04, 0.07],
        (0.04, 0.07),
    )
    assert watchdog.energy_limits(300.0) == (0.1, 0.05)
    assert (watchdog.min_distance_ratio, watchdog.max_bond_stretch) == (0.6, 1.5)
    bias, watchdog = build(BiasConfig, plain["bias"]), build(WatchdogConfig, plain["watchdog"])
    assert (bias.tau, bias.project, bias.fade_range(300.0)) == (0.0, "none", None)
    assert watchdog.energy_limits(1200.0) == (None, None)
    assert (watchdog.min_distance_ratio, watchdog.max_bond_stretch) == (None, 1.5)


def test_spread_picks_the_farthest_points_in_torsion_space():
    """Farthest-point sampling with the periodic RMS distance, checked by hand on 1-torsion
    points: from 0 deg the farthest is 180 (not 170: -190 is 170), then 90 or -90."""
    from molecule_test_set import spread, torsion_distance

    points = np.array([[10.0], [170.0], [180.0], [-90.0], [5.0]])
    assert torsion_distance(np.array([0.0]), np.array([[350.0], [-170.0]])).tolist() == [10, 170]
    assert spread(points, np.array([0.0]), 3) == [2, 3, 0]
