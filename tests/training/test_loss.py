"""The loss terms against an independent computation: MACE's own calculator per frame + numpy."""

from __future__ import annotations

import copy

import numpy as np
import torch

from uq_bias.models import load_model
from uq_bias.training.datamodule import collate
from uq_bias.training.loss import LossWeights, batch_errors, predict, weighted_loss


def _reference_terms(mace_model, frames):
    """Energy-per-atom, force and stress MSE from mace.calculators.MACECalculator, in numpy."""
    from mace.calculators import MACECalculator

    calc = MACECalculator(models=[copy.deepcopy(mace_model)], default_dtype="float64")
    de, df, ds = [], [], []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calc
        ref = frame.calc.results
        de.append((atoms.get_potential_energy() - ref["energy"]) / len(atoms))
        df.append(atoms.get_forces() - ref["forces"])
        if "stress" in ref:
            ds.append(atoms.get_stress(voigt=False) - frame.get_stress(voigt=False))
    return (
        np.mean(np.square(de)),
        np.mean(np.square(np.concatenate(df))),
        np.mean(np.square(np.stack(ds))),
    )


def test_loss_terms_match_mace_calculator(tiny_mace, mixed_frames, restore_default_dtype):
    model = load_model(copy.deepcopy(tiny_mace))
    batch = collate(mixed_frames, model.cutoff, model.atomic_numbers, torch.float64)
    assert batch.has_stress.tolist() == [True, True, False]
    pred = predict(model, batch.graph, stress=True, create_graph=True)
    errors = batch_errors(pred, batch)
    energy, forces, stress = _reference_terms(tiny_mace, mixed_frames)
    np.testing.assert_allclose(errors.mse("energy").item(), energy, rtol=1e-9)
    np.testing.assert_allclose(errors.mse("forces").item(), forces, rtol=1e-9)
    np.testing.assert_allclose(errors.mse("stress").item(), stress, rtol=1e-9)
    weights = LossWeights(energy=2.0, forces=3.0, stress=5.0)
    loss = weighted_loss(pred, batch, weights)
    np.testing.assert_allclose(loss.item(), 2.0 * energy + 3.0 * forces + 5.0 * stress, rtol=1e-9)
    loss.backward()  # create_graph=True: the force and stress terms reach the weights
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
