"""Recipes: every YAML validates; the wrap-a-model script runs (reduced) and its trajectory
holds the uncertainties the calibrated model gives when evaluated again."""

from __future__ import annotations

import runpy
from pathlib import Path

import ase.io
import numpy as np
import pytest

from uq_bias.campaign import config as cfg

RECIPES = Path(__file__).parents[2] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_is_valid(path):
    config = cfg.load(path)
    assert config.folder == path.stem
    if config.data.structures.startswith("builtin:"):
        from uq_bias.campaign.systems import BUILTINS

        assert config.data.structures.split(":", 1)[1] in BUILTINS


def test_biased_and_unbiased_alanine_differ_only_in_the_bias():
    biased = cfg.to_dict(cfg.load(RECIPES / "alanine_dipeptide_biased.yaml"))
    unbiased = cfg.to_dict(cfg.load(RECIPES / "alanine_dipeptide_unbiased.yaml"))
    assert biased["exploration"]["bias"]["tau_rel"] > 0
    assert unbiased["exploration"]["bias"]["tau"] == 0.0  # plain MD
    biased["exploration"]["bias"] = unbiased["exploration"]["bias"]
    biased.pop("folder"), unbiased.pop("folder")
    assert biased == unbiased


@pytest.mark.slow
def test_wrap_script_runs_biased_md(tmp_path, cu_frames, monkeypatch):
    from uq_bias.training import FitOptions, TrainerOptions, train
    from uq_bias.uncertainty import GradientFeatureUncertainty, calibrate, load

    ase.io.write(tmp_path / "train.xyz", cu_frames[:8])
    ase.io.write(tmp_path / "valid.xyz", cu_frames[8:])
    model_file = tmp_path / "cu.model"
    train(
        cu_frames[:8],
        cu_frames[8:],
        model_file,
        preset="tiny",
        cutoff=4.0,
        options=FitOptions(max_epochs=2),
        trainer_options=TrainerOptions(progress_bar=False),
        log=None,
    )
    out = tmp_path / "md.extxyz"
    argv = [
        str(model_file),
        str(tmp_path / "train.xyz"),
        str(tmp_path / "valid.xyz"),
        "--steps",
        "20",
        "--temperature",
        "300",
        "--out",
        str(out),
        "--unc-out",
        str(tmp_path / "unc"),
    ]
    monkeypatch.setattr("sys.argv", ["wrap_mace_biased_md.py", *argv])
    runpy.run_path(str(RECIPES / "wrap_mace_biased_md.py"), run_name="__main__")
    frames = ase.io.read(out, ":")
    assert 1 <= len(frames) <= 2  # every 10 of 20 steps, unless the watchdog stopped it
    # the same recipe by hand: the stored uncertainties are those of the calibrated model
    model = GradientFeatureUncertainty(str(model_file)).fit(
        ase.io.read(tmp_path / "train.xyz", ":")
    )
    calibrate(model, ase.io.read(tmp_path / "valid.xyz", ":"), method="conformal", alpha=0.1)
    saved = load(tmp_path / "unc")  # the folder `uq-bias select --unc` reads
    for frame in frames:
        out_u = model(model.graph(frame).requires_grad_(True))
        np.testing.assert_allclose(
            frame.info["energy_uncertainty"], out_u.energy_uncertainty.item(), rtol=1e-6
        )
        np.testing.assert_allclose(
            saved(saved.graph(frame).requires_grad_(True)).energy_uncertainty.item(),
            out_u.energy_uncertainty.item(),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            frame.arrays["forces_uncertainty"], out_u.atom_uncertainty.detach().numpy(), rtol=1e-6
        )
