"""`uq-bias md`: the frames it writes are those of the Python API on the same saved model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

from uq_bias import keys
from uq_bias.bias import BiasConfig
from uq_bias.cli import main
from uq_bias.dynamics import CalculatorRecipe, ExploreConfig, WatchdogConfig, explore


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, fitted_ensemble, cu8_frames):
    """A gradient-feature posterior on a readout-fitted MACE file, saved with uncertainty.save."""
    from uq_bias.uncertainty import GradientFeatureUncertainty, save

    folder = tmp_path_factory.mktemp("md_cli")
    torch.save(fitted_ensemble.members[0].model, folder / "model.pt")
    unc = GradientFeatureUncertainty(str(folder / "model.pt")).fit(cu8_frames)
    return save(unc, folder / "unc")


def test_cli_md_matches_the_python_api(saved_model, cu8_frames, tmp_path, capsys):
    write(tmp_path / "start.extxyz", cu8_frames[:2], format="extxyz")  # one walker: frame 0
    out = tmp_path / "traj.extxyz"
    argv = ["md", "--unc", str(saved_model), "--start", str(tmp_path / "start.extxyz")]
    argv += ["--steps", "10", "--sample-every", "5", "--tau", "20", "--timestep", "2"]
    # the rattled Cu8 frame falls more than the default 2 k_B T/atom drop under tau 20: switch
    # the drop stop off on both sides, the test compares the CLI with the API over 10 steps
    argv += ["--watchdog-max-energy-drop-kt", "null"]
    assert main([*argv, "--seed", "4", "--out", str(out), "--no-progress"]) == 0
    frames = read(out, index=":")
    assert [f.info["step"] for f in frames] == [5, 10]
    printed = capsys.readouterr().out
    assert "walker 0: completed at step 10, 2 frames" in printed
    assert "2 start structures and 1 walker(s)" in printed and "1 to 1 are not used" in printed

    recipe = CalculatorRecipe(str(saved_model), bias=BiasConfig(tau=20.0))
    config = ExploreConfig(
        steps=10,
        sample_every=5,
        timestep=2.0,
        seed=4,
        progress=False,
        watchdog=WatchdogConfig(max_energy_drop_kt=None),
    )
    expected = explore(recipe, cu8_frames[0], config).frames
    for got, want in zip(frames, expected):
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-8)
        np.testing.assert_allclose(got.info[keys.BIAS_ENERGY], want.info[keys.BIAS_ENERGY])
        assert got.info[keys.BIAS_STRENGTH] == 20.0


def test_cli_md_bad_input(saved_model, tmp_path, capsys):
    from ase.build import molecule

    write(tmp_path / "mol.xyz", molecule("CH4"))
    argv = ["md", "--unc", str(saved_model), "--start", str(tmp_path / "mol.xyz")]
    argv += ["--out", str(tmp_path / "x.extxyz"), "--no-progress"]
    argv += ["--steps", "2", "--sample-every", "1"]  # md refuses sample_every > steps
    write(tmp_path / "cu2.xyz", Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]]))
    npt = [*argv, "--ensemble", "npt", "--start", str(tmp_path / "cu2.xyz")]
    assert main(npt) == 2
    assert "NPT needs periodic cells" in capsys.readouterr().err
    assert main([*argv, "--tau", "1", "--weights", "H"]) == 2
    assert "--weights: expected dict[str | int, float], got str 'H'" in capsys.readouterr().err
    assert main([*argv, "--watchdog-max-uncertainty", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--watchdog-max-uncertainty: " in err and "must be a finite number >= 0" in err
    assert not (tmp_path / "x.extxyz").exists()
    # elements the Cu model never saw: exit 2 before any walker opens (and empties) --out
    (tmp_path / "x.extxyz").write_text("a trajectory of mine\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mol.xyz'}, structure 0, contains element(s) ['H', 'C']" in err
    assert "not in the model (['Al', 'Cu'])" in err
    assert (tmp_path / "x.extxyz").read_text() == "a trajectory of mine\n"
