"""Feature maps against autograd gradients and exact kernels."""

from __future__ import annotations

import pytest
import torch

from uq_bias.models.mace import MACEAdapter, _scalar_instruction
from uq_bias.uncertainty.features import FeatureMap, product_sketch, structure_sum


def structure_features(fmap, adapter, frames):
    graph = adapter.graph(frames)
    phi = fmap(adapter, graph)[1].detach()
    return structure_sum(phi, graph.batch, graph.n_structures)


def exact_all_readout_gradient(adapter, atoms):
    """(P + n0 * H,) dE/d[w_last, W_1] of one structure by autograd (the slow reference)."""
    out = adapter(adapter.graph(atoms))
    last = adapter.last_layer_gradient(out.energy.sum())
    linear_1 = adapter.model.readouts[-1].linear_1
    ins, offset = _scalar_instruction(linear_1)
    (grad,) = torch.autograd.grad(out.energy.sum(), linear_1.weight)
    block = grad.reshape(-1).narrow(0, offset, ins.path_shape[0] * ins.path_shape[1])
    return torch.cat([last, block.reshape(-1)])


def relative_error(approx, exact):
    return float(torch.linalg.norm(approx - exact) / torch.linalg.norm(exact))


def test_readout_gradients_are_exact(cu_model, small_cu_frames):
    """sum_i x_i (x) g_i equals autograd's dE/dW_1 (float64, 1e-10)."""
    adapter = MACEAdapter(cu_model)
    graph = adapter.graph(small_cu_frames[0])
    grads = adapter.readout_gradients(graph)
    outer = torch.einsum("na,nb->ab", grads.inputs, grads.grads).reshape(-1)
    reference = exact_all_readout_gradient(adapter, small_cu_frames[0])[adapter.n_features :]
    torch.testing.assert_close(outer, reference, atol=1e-10, rtol=0)
    torch.testing.assert_close(
        grads.output.features.sum(0),
        adapter.last_layer_gradient(adapter(graph).energy.sum()),
        atol=1e-10,
        rtol=0,
    )


@pytest.mark.parametrize("kind", ["sketch", "all_readouts"])
def test_sketch_preserves_kernel(cu_model, small_cu_frames, kind):
    """||K_p - K||_F / ||K||_F <= 3 sqrt(2 / p) and shrinks from p = 64 to p = 4096, with K the
    exact kernel of per-structure gradients (autograd for all_readouts)."""
    adapter = MACEAdapter(cu_model)
    frames = small_cu_frames[:6]
    if kind == "sketch":
        exact = structure_features(FeatureMap(adapter, "last_layer"), adapter, frames)
    else:
        exact = torch.stack([exact_all_readout_gradient(adapter, a) for a in frames])
    kernel = exact @ exact.T
    errors = []
    for dim in (64, 4096):
        sketched = structure_features(FeatureMap(adapter, kind, sketch_dim=dim), adapter, frames)
        errors.append(relative_error(sketched @ sketched.T, kernel))
        assert errors[-1] <= 3 * (2 / dim) ** 0.5
    assert errors[1] < errors[0]


def test_product_sketch_is_unbiased():
    """The mean over independent sketches of s(x,g).s(x',g') tends to (x.x')(g.g')."""
    gen = torch.Generator().manual_seed(1)
    x, g = (
        torch.randn(2, 5, generator=gen, dtype=torch.float64),
        torch.randn(2, 3, generator=gen, dtype=torch.float64),
    )
    exact = float((x[0] @ x[1]) * (g[0] @ g[1]))
    dim, draws = 64, 400
    values = []
    for _ in range(draws):
        u = torch.randn(5, dim, generator=gen, dtype=torch.float64) / dim**0.5
        v = torch.randn(3, dim, generator=gen, dtype=torch.float64) / dim**0.5
        s = product_sketch(x, g, u, v)
        values.append(float(s[0] @ s[1]))
    values = torch.tensor(values)
    assert abs(values.mean() - exact) < 4 * values.std() / draws**0.5


def test_bad_options(cu_model):
    adapter = MACEAdapter(cu_model)
    with pytest.raises(ValueError, match="unknown feature kind"):
        FeatureMap(adapter, "everything")
    with pytest.raises(ValueError, match="sketch_dim"):
        FeatureMap(adapter, "sketch", sketch_dim=0)
