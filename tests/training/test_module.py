"""The Lightning module trains any adapter: a user's GenericAdapter model in float32."""

from __future__ import annotations

import copy

import numpy as np
import torch

from uq_bias import Calculator, GenericAdapter
from uq_bias.graph import edge_vectors
from uq_bias.training import FitOptions, TrainerOptions, fit, read_frames


class PairNet(torch.nn.Module):
    """E_i = out(tanh(W g_i)), g_i = sum_j exp(-(r_ij - mu)^2) f_cut(r_ij) * embed(Z_i)."""

    def __init__(self, cutoff: float, width: int = 8):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("mu", torch.linspace(1.5, cutoff, 6))
        self.embed = torch.nn.Embedding(100, 6)
        self.hidden = torch.nn.Linear(6, width)
        self.out = torch.nn.Linear(width, 1)

    def forward(self, graph):
        lengths = edge_vectors(graph).norm(dim=1)
        cut = 0.5 * (torch.cos(torch.pi * lengths / self.cutoff) + 1)
        basis = torch.exp(-((lengths[:, None] - self.mu) ** 2)) * cut[:, None]
        density = basis.new_zeros(graph.n_atoms, 6).index_add(0, graph.edge_index[1], basis)
        hidden = torch.tanh(self.hidden(density * self.embed(graph.atomic_numbers)))
        return self.out(hidden).squeeze(-1)


def _force_rmse(model, frames):
    """Force RMSE by the ASE calculator, frame by frame (independent of batching and the loss)."""
    calc = Calculator(model)
    errors = []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calc
        errors.append(atoms.get_forces() - frame.get_forces())
    return float(np.sqrt(np.mean(np.square(np.concatenate(errors)))))


def test_fit_trains_a_generic_float32_model(data_dir):
    train = read_frames(data_dir / "train.extxyz")
    valid = read_frames(data_dir / "valid.extxyz")
    torch.manual_seed(1)
    model = GenericAdapter(PairNet(cutoff=3.5), "out", cutoff=3.5, atomic_numbers=[13, 29])
    assert model.dtype == torch.float32
    before = _force_rmse(model, valid)
    result = fit(
        model,
        train,
        valid,
        FitOptions(max_epochs=6, batch_size=2, lr=5e-2, ema_decay=None),
        TrainerOptions(accelerator="cpu", progress_bar=False),
    )
    assert [row["epoch"] for row in result.history] == list(range(7))
    np.testing.assert_allclose(result.history[0]["val_forces_rmse"], before, rtol=1e-5)
    after = _force_rmse(result.model, valid)
    best = min(result.history, key=lambda row: row["val_loss"])
    np.testing.assert_allclose(best["val_forces_rmse"], after, rtol=1e-5)
    assert after < 0.9 * before
    assert result.model.dtype == torch.float32


def test_early_stopping_keeps_the_best_weights(data_dir):
    """A learning rate far too large makes val_loss rise. With keep_initial the initial model
    is the score to beat: training stops after `patience` epochs and the model keeps its initial
    (epoch 0, best) weights. Without it (the default) the best *trained* epoch is returned, so
    training always changes the model: its force RMSE (recomputed by the calculator) is that
    epoch's, and early stopping counted from epoch 1."""
    train = read_frames(data_dir / "train.extxyz")
    valid = read_frames(data_dir / "valid.extxyz")
    results = {}
    for keep in (True, False):
        torch.manual_seed(2)
        model = GenericAdapter(PairNet(cutoff=3.5), "out", cutoff=3.5, atomic_numbers=[13, 29])
        initial = copy.deepcopy(model.state_dict())
        options = FitOptions(
            max_epochs=20, batch_size=2, lr=50.0, ema_decay=None, patience=2, keep_initial=keep
        )
        results[keep] = fit(
            model, train, valid, options, TrainerOptions(accelerator="cpu", progress_bar=False)
        )
    losses = [row["val_loss"] for row in results[True].history]
    assert len(losses) == 1 + 2 and min(losses) == losses[0], losses  # stopped after 2 epochs
    for name, value in initial.items():
        torch.testing.assert_close(results[True].model.state_dict()[name], value, rtol=0, atol=0)
    trained = results[False].history[1:]
    best = min(trained, key=lambda row: row["val_loss"])
    assert len(trained) >= 1 + 2  # patience counted from the first trained epoch
    assert best["val_loss"] > results[False].history[0]["val_loss"]  # worse than the start ...
    np.testing.assert_allclose(  # ... and still the model returned
        _force_rmse(results[False].model, valid), best["val_forces_rmse"], rtol=1e-4
    )
    changed = [
        not torch.equal(results[False].model.state_dict()[name], value)
        for name, value in initial.items()
    ]
    assert any(changed)
