"""The rest of uq_bias on a NequIP adapter, unchanged: gradient-feature uncertainty, the biased
calculator, and training with uq_bias.training."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

import uq_bias
from uq_bias import load_model
from uq_bias.testing import check_last_layer_features

pytest.importorskip("nequip.model")  # a real nequip, not a namespace of test dirs

from uq_bias.models.nequip import NequIPAdapter  # noqa: E402


def _missing(*modules: str) -> bool:
    return any(importlib.util.find_spec(module) is None for module in modules)


@pytest.fixture(scope="module")
def uncertainty(trained_nequip):
    """Posterior uncertainty from the trained NequIP model's exact last-layer features, fitted
    on its six training frames."""
    if _missing("uq_bias.uncertainty.gradient"):
        pytest.skip("gradient-feature uncertainty (uq_bias.uncertainty.gradient) not available")
    from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

    model = GradientFeatureUncertainty(load_model(trained_nequip.checkpoint))
    model.fit(trained_nequip.frames[:6])
    return model


@pytest.mark.skipif(_missing("uq_bias.bias"), reason="the bias is not available")
def test_gradient_feature_bias_on_nequip_matches_finite_differences(uncertainty, cell):
    """The posterior uncertainty biases the calculator; its forces and stress are minus the
    gradients of its (biased) energy."""
    from uq_bias.bias import BiasConfig

    cell.calc = uq_bias.Calculator(uncertainty, bias=BiasConfig(tau=5.0))
    cell.get_potential_energy()
    results = cell.calc.results
    assert results["energy_uncertainty"] > 0 and abs(results["bias_energy"]) > 1e-3
    assert np.abs(results["bias_forces"]).max() > 1e-3, "the bias is too weak to test anything"
    numeric = calculate_numerical_forces(cell, eps=1e-4, iatoms=range(4))
    np.testing.assert_allclose(cell.get_forces()[:4], numeric, rtol=1e-5, atol=1e-7)
    numeric = calculate_numerical_stress(cell, eps=1e-5)
    np.testing.assert_allclose(cell.get_stress(), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(_missing("uq_bias.training.train"), reason="uq_bias.training not available")
def test_uq_bias_training_fits_a_nequip_adapter(trained_nequip, build_nequip, cell, cluster):
    """uq_bias.training.fit trains a NequIP adapter with Lightning: the training loss falls, and
    the trained adapter still has exact last-layer features."""
    from uq_bias.training.train import FitOptions, TrainerOptions, fit

    frames = trained_nequip.frames
    adapter = NequIPAdapter(build_nequip(seed=4))
    result = fit(
        adapter,
        frames[:6],
        frames[6:],
        FitOptions(max_epochs=3, batch_size=2, patience=5),
        TrainerOptions(accelerator="cpu", devices=1, progress_bar=False),
    )
    losses = [epoch["train_loss"] for epoch in result.history if "train_loss" in epoch]
    assert len(losses) == 3 and losses[-1] < losses[0], f"training losses {losses}"
    assert isinstance(result.model, NequIPAdapter)
    check_last_layer_features(result.model, [cluster, cell])


@pytest.mark.skipif(_missing("uq_bias.selection.api"), reason="uq_bias.selection not available")
def test_maxdet_selection_on_nequip_features(uncertainty, trained_nequip, cell):
    """select() picks the same frames as a naive greedy log-det over the NequIP posterior kernel,
    and its first pick (the largest posterior variance) is a strongly rattled frame, not one the
    model was trained on."""
    from uq_bias.selection.api import pool_features, select
    from uq_bias.selection.reference import greedy_logdet_reference

    pool = list(trained_nequip.frames[:3])
    for seed in range(3):
        atoms = cell.copy()
        atoms.rattle(0.25, seed=seed)
        pool.append(atoms)
    chosen = select(uncertainty, pool, 3).indices
    features = pool_features(uncertainty, pool)
    assert chosen == greedy_logdet_reference(features @ features.T, 3)
    assert chosen[0] >= 3, f"picked {chosen}: a training frame first"
