"""The gradient-feature uncertainty model: limits in sigma, distance from data, derivatives."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from uq_bias.calculator import Calculator
from uq_bias.models.mace import MACEAdapter
from uq_bias.uncertainty.gradient import GradientFeatureUncertainty


@pytest.fixture(scope="module")
def fitted(cu_model, small_cu_frames):
    return GradientFeatureUncertainty(cu_model, sigma=1e-2).fit(small_cu_frames[:6])


def energy_u(model, atoms) -> float:
    return model(model.graph(atoms)).energy_uncertainty.item()


@pytest.mark.parametrize("features", ["last_layer", "all_readouts"])
def test_posterior_shrinks_with_sigma_and_grows_far_from_data(cu_model, small_cu_frames, features):
    """u(train) -> 0 linearly in sigma; a strongly distorted frame keeps a large u."""
    train = small_cu_frames[:6]
    far = train[0].copy()
    far.rattle(0.35, seed=2)
    values = {}
    for sigma in (1e-1, 1e-2, 1e-3):
        model = GradientFeatureUncertainty(cu_model, sigma=sigma, features=features).fit(train)
        values[sigma] = (energy_u(model, train[0]), energy_u(model, far))
    for big, small in ((1e-1, 1e-2), (1e-2, 1e-3)):
        assert values[small][0] < 0.3 * values[big][0]
    assert values[1e-3][1] > 10 * values[1e-3][0]


def test_distance_is_zero_on_training_frames(cu_model, small_cu_frames):
    model = GradientFeatureUncertainty(cu_model, method="distance").fit(small_cu_frames[:6])
    out = model(model.graph(small_cu_frames[2]))
    assert out.energy_uncertainty.item() < 1e-6
    assert energy_u(model, small_cu_frames[7]) > 1e-3


def test_uncertainty_gradient_matches_finite_differences(fitted, small_cu_frames):
    atoms = small_cu_frames[7]
    graph = fitted.graph(atoms).requires_grad_(positions=True)
    out = fitted(graph)
    (grad,) = torch.autograd.grad(out.energy_uncertainty.sum(), graph.positions)
    h = 1e-5
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[4, 1] += h
    minus.positions[4, 1] -= h
    fd = (energy_u(fitted, plus) - energy_u(fitted, minus)) / (2 * h)
    assert abs(grad[4, 1].item() - fd) < 1e-6 * max(1.0, abs(fd))


def test_batch_and_selection_features(fitted, small_cu_frames):
    frames = small_cu_frames[6:8]
    both = fitted(fitted.graph(frames))
    single = [fitted(fitted.graph(a)).energy_uncertainty.item() for a in frames]
    np.testing.assert_allclose(both.energy_uncertainty.detach().numpy(), single, rtol=1e-10)
    g = fitted.selection_features(fitted.graph(frames))
    torch.testing.assert_close(torch.diagonal(g @ g.T).sqrt(), both.energy_uncertainty.detach())


def test_calculator_reports_uncertainties(fitted, small_cu_frames):
    atoms = small_cu_frames[7].copy()
    atoms.calc = Calculator(fitted, copy_to_atoms=True)
    forces = atoms.get_forces()
    plain = small_cu_frames[7].copy()
    plain.calc = Calculator(fitted.model)
    np.testing.assert_allclose(forces, plain.get_forces(), atol=1e-12)
    assert atoms.calc.results["forces_uncertainty"].shape == (len(atoms),)
    assert atoms.info["energy_uncertainty"] == atoms.calc.results["energy_uncertainty"]


def test_fit_needs_two_frames(cu_model, small_cu_frames):
    model = GradientFeatureUncertainty(cu_model)
    with pytest.raises(ValueError, match="got 0 frame"):
        model.fit([])
    with pytest.raises(ValueError, match="got 1 frame"):
        model.fit(small_cu_frames[:1])
    with pytest.raises(ValueError, match="not fitted"):
        model(model.graph(small_cu_frames[0]))


def test_uncertainty_is_invariant_under_rotation_and_translation(fitted, small_cu_frames):
    atoms = small_cu_frames[7]
    moved = atoms.copy()
    moved.rotate(37, (1, 2, 3), rotate_cell=True)
    moved.translate((0.3, -1.2, 2.0))
    a, b = fitted(fitted.graph(atoms)), fitted(fitted.graph(moved))
    torch.testing.assert_close(a.energy_uncertainty, b.energy_uncertainty, atol=1e-10, rtol=0)
    torch.testing.assert_close(a.atom_uncertainty, b.atom_uncertainty, atol=1e-10, rtol=0)


class PairNet(torch.nn.Module):
    """E_i = readout(silu(W d_i)), d_i = sum_j exp(-k r_ij) (1 - r_ij/r_c)^2, k = 1, 2, 3."""

    def __init__(self, cutoff: float = 4.0):
        super().__init__()
        self.cutoff = cutoff
        self.hidden = torch.nn.Linear(3, 6, dtype=torch.float64)
        self.readout = torch.nn.Linear(6, 1, dtype=torch.float64)

    def forward(self, graph):
        from uq_bias.graph import edge_vectors

        r = edge_vectors(graph).norm(dim=1, keepdim=True)
        k = torch.arange(1, 4, dtype=r.dtype)
        terms = torch.exp(-k * r) * (1 - r / self.cutoff) ** 2
        density = terms.new_zeros(graph.n_atoms, 3).index_add(0, graph.edge_index[1], terms)
        return self.readout(torch.nn.functional.silu(self.hidden(density))).squeeze(-1)


def test_any_adapter_works(small_cu_frames):
    """A user's module behind GenericAdapter: exact and sketched features; no all_readouts."""
    from uq_bias import GenericAdapter

    adapter = GenericAdapter(PairNet(), "readout", cutoff=4.0, atomic_numbers=[13, 29])
    for features in ("last_layer", "sketch"):
        u = [
            energy_u(
                GradientFeatureUncertainty(adapter, features=features, sigma=s).fit(
                    small_cu_frames[:4]
                ),
                small_cu_frames[1],
            )
            for s in (1e-2, 1e-3)
        ]
        assert u[1] < 0.3 * u[0]
    with pytest.raises(ValueError, match="all_readouts.*GenericAdapter has none"):
        GradientFeatureUncertainty(adapter, features="all_readouts")


@pytest.mark.parametrize("features", ["last_layer", "sketch"])
def test_float32_model_matches_float64_twin(cu_model, small_cu_frames, features):
    """The same model in float32 and float64: features, posterior, calibration and outputs are
    float64 either way, and the uncertainties, selection features and bias forces agree to the
    float32 model's own precision (relative 1e-4)."""
    from uq_bias.bias import BiasConfig

    results = {}
    for dtype in (torch.float64, torch.float32):
        model = GradientFeatureUncertainty(
            MACEAdapter(copy.deepcopy(cu_model).to(dtype)), features=features, sketch_dim=32
        ).fit(small_cu_frames[:6])
        graph = model.graph(small_cu_frames[6:])
        out = model(graph)
        selection = model.selection_features(graph).detach()
        atoms = small_cu_frames[7].copy()
        atoms.calc = Calculator(model, bias=BiasConfig(tau=1.0))
        atoms.get_forces()
        results[dtype] = (out, selection, atoms.calc.results)
        tensors = (out.energy, out.energy_uncertainty, out.atom_uncertainty, selection)
        assert all(t.dtype == torch.float64 for t in tensors)
    (ref, ref_g, ref_r), (low, low_g, low_r) = results[torch.float64], results[torch.float32]
    torch.testing.assert_close(low.energy_uncertainty, ref.energy_uncertainty, rtol=1e-4, atol=0)
    torch.testing.assert_close(low.atom_uncertainty, ref.atom_uncertainty, rtol=1e-4, atol=0)
    torch.testing.assert_close(low_g, ref_g, rtol=1e-4, atol=1e-4 * float(ref_g.abs().max()))
    bias = ref_r["bias_forces"]
    assert np.abs(low_r["bias_forces"] - bias).max() < 1e-4 * np.abs(bias).max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_already_on_the_gpu_needs_no_move(cu_model, small_cu_frames):
    """Built around a model on the GPU, the posterior and its calibration live there: fitted
    and calibrated alike, it gives the uncertainties of its CPU twin (no .to() called)."""
    twins = [
        GradientFeatureUncertainty(model, sigma=1e-2).fit(small_cu_frames[:6])
        for model in (copy.deepcopy(cu_model).to("cuda"), cu_model)
    ]
    got = []
    for model in twins:
        model.calibration.set(1.5, 2.0)
        atoms = small_cu_frames[7].copy()
        atoms.calc = Calculator(model)
        atoms.get_forces()
        got.append(atoms.calc.results["forces_uncertainty"])
    np.testing.assert_allclose(got[0], got[1], rtol=1e-5)
