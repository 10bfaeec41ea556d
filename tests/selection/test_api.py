"""The ``select`` wrapper: precomputed features, a real ensemble, chunking and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_data import rattled_cu_frames

from uq_bias import GenericAdapter
from uq_bias.graph import edge_vectors
from uq_bias.selection import greedy_logdet_reference, lcmd, maxdist, select


def test_select_with_features(gaussian):
    feats = gaussian(40, 8, seed=1)
    assert select(features=feats, k=6).indices == greedy_logdet_reference(feats @ feats.T, 6)
    assert select(features=feats.numpy(), k=6).method == "maxdet"
    # maxdist and lcmd are tested against bmdal-reg in their own files; here only the dispatch
    assert select(features=feats, k=6, method="maxdist").indices == maxdist(feats, 6).indices
    assert select(features=feats, k=6, method="lcmd").indices == lcmd(feats, 6).indices


def test_random_is_seeded_and_distinct():
    a = select(features=torch.zeros(50, 2), k=10, method="random", seed=3)
    b = select(features=torch.zeros(50, 2), k=10, method="random", seed=3)
    c = select(features=torch.zeros(50, 2), k=10, method="random", seed=4)
    assert a.indices == b.indices != c.indices
    assert len(set(a.indices)) == 10 and all(0 <= i < 50 for i in a.indices)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3))[:10].tolist()
    assert a.indices == expected
    assert len(select(features=torch.zeros(5, 2), k=10, method="random")) == 5


def test_bad_arguments(gaussian):
    feats = gaussian(4, 3, seed=0)
    with pytest.raises(ValueError, match="maxdet.*maxdist.*lcmd.*random"):
        select(features=feats, k=2, method="kmeans")
    with pytest.raises(ValueError, match="4 rows but pool_frames has 3"):
        select(None, [None] * 3, 2, features=feats)
    with pytest.raises(TypeError, match="k .* is required"):
        select(features=feats)
    with pytest.raises(TypeError, match="no graph\\(\\) method"):
        select(object(), [None], 1)
    with pytest.raises(TypeError, match="give an uncertainty_model"):
        select(k=1)


class PairNet(torch.nn.Module):
    """A small real user model: E_i = readout(tanh(W sum_j exp(-(r_ij - mu)^2) f_cut(r_ij)))."""

    def __init__(self, cutoff: float = 4.0):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("mu", torch.linspace(1.5, cutoff, 6, dtype=torch.float64))
        self.hidden = torch.nn.Linear(6, 8, dtype=torch.float64)
        self.readout = torch.nn.Linear(8, 1, dtype=torch.float64)

    def forward(self, graph):
        lengths = edge_vectors(graph).norm(dim=1)
        cut = 0.5 * (torch.cos(torch.pi * lengths / self.cutoff) + 1)
        basis = torch.exp(-((lengths[:, None] - self.mu) ** 2)) * cut[:, None]
        density = basis.new_zeros(graph.n_atoms, 6).index_add(0, graph.edge_index[1], basis)
        return self.readout(torch.tanh(self.hidden(density))).squeeze(-1)


@pytest.fixture(scope="module")
def ensemble():
    """Four differently initialised PairNets as a deep ensemble."""
    from uq_bias.uncertainty.ensemble import Ensemble

    members = []
    for seed in range(4):
        torch.manual_seed(seed)
        members.append(GenericAdapter(PairNet(), "readout", 4.0, atomic_numbers=[13, 29]))
    return Ensemble(members)


def test_select_with_an_ensemble(ensemble, cu_frames):
    """Chunked features equal one-frame-at-a-time member energies; picks equal brute force."""
    rows = []
    for frame in cu_frames:
        energies = torch.stack(
            [m(m.graph(frame)).energy.detach()[0] for m in ensemble.members]
        ).double()
        rows.append((energies - energies.mean()) / 3**0.5)  # (E_k - mean) / sqrt(K - 1)
    feats = torch.stack(rows)
    expected = greedy_logdet_reference(feats @ feats.T, 5)  # rank K - 1 = 3: 3 picks, then fill
    sel = select(ensemble, cu_frames, 5, chunk_size=5)
    assert sel.indices[:3] == expected and len(expected) == 3
    assert sel.n_filled == 2 and len(set(sel.indices)) == 5
    variance = float(feats[expected[0]] @ feats[expected[0]])  # = var_k(E_k), unbiased
    assert sel.scores[0] == pytest.approx(variance, rel=1e-8)


def posterior_kernel(model, labelled, pool, sigma=1e-2) -> np.ndarray:
    """Slow reference: sigma^2 Phi~_P (Phi~_L^T Phi~_L + sigma^2 I)^-1 Phi~_P^T with each frame's
    Phi = dE/dw by autograd (not the feature hooks), s = sqrt(n_L / sum ||Phi_L||^2), numpy."""

    def phi(frames):
        rows = [model.last_layer_gradient(model(model.graph(f)).energy[0]) for f in frames]
        return torch.stack(rows).detach().numpy()

    phi_l, phi_p = phi(labelled), phi(pool)
    s = np.sqrt(len(labelled) / (phi_l**2).sum())
    a = s**2 * phi_l.T @ phi_l + sigma**2 * np.eye(phi_l.shape[1])
    return sigma**2 * s**2 * phi_p @ np.linalg.solve(a, phi_p.T)


def test_ensemble_selects_full_batches_conditioned_on_labelled_frames(ensemble):
    """K = 4 members, batch 8: with labelled frames all 8 picks are max-det picks (no fill-up;
    the energies alone have rank K - 1 = 3), in the order of a brute-force greedy log-det on the
    mean of the members' posterior kernels given the labelled frames."""
    labelled = rattled_cu_frames(4, seed=5, size=(2, 1, 1))
    pool = rattled_cu_frames(14, seed=6, size=(2, 1, 1))
    sel = select(ensemble, pool, 8, labelled_frames=labelled, chunk_size=5)
    assert len(sel) == 8 and sel.n_filled == 0
    kernel = np.mean([posterior_kernel(m, labelled, pool) for m in ensemble.members], axis=0)
    assert sel.indices == greedy_logdet_reference(torch.from_numpy(kernel), 8)
    assert select(ensemble, pool, 8).n_filled == 5  # the ensemble's own features: rank 3


def test_labelled_frames_condition_the_selection(ensemble, cu_frames):
    """The frame picked first given two labelled frames is no longer picked first once it is
    labelled too; the picks follow the brute-force posterior given all three."""
    from uq_bias.uncertainty import GradientFeatureUncertainty

    model = GradientFeatureUncertainty(ensemble.members[0]).fit(cu_frames[:2])
    pool = cu_frames[2:8]
    first = select(model, pool, 1).indices[0]
    again = select(model, pool, 3, labelled_frames=[*cu_frames[:2], pool[first]])
    assert again.indices[0] != first
    kernel = posterior_kernel(ensemble.members[0], [*cu_frames[:2], pool[first]], pool)
    assert again.indices == greedy_logdet_reference(torch.from_numpy(kernel), 3)
    with pytest.raises(TypeError, match="labelled_frames conditions"):
        select(features=torch.eye(3), k=1, labelled_frames=pool)
