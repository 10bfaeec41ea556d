"""Gradient features of one model: exact last-layer features and random-projection sketches.

Symbols (N atoms, P last-layer features, p sketch dimension):

    phi_i in R^P     exact last-layer features, phi_i = dE_i/dw            (from the adapter)
    Phi(S)           = sum_{i in S} phi_i, the gradient of the total energy
    M in R^{P x p}   Gaussian projection, entries N(0, 1/p), fixed seed
    sketch(phi)      = phi M,  E[sketch(a) . sketch(b)] = a . b
    x_i (x) g_i      outer-product gradient of a hidden layer (x_i its scaled inputs, g_i the
                     energy gradient at its pre-activation)
    product sketch   s(x, g) = sqrt(p) * (x U) * (g V),  U, V entries N(0, 1/p),
                     E[s(x, g) . s(x', g')] = (x . x')(g . g') = <x (x) g, x' (x) g'>

Kinds of feature map:

* ``last_layer``: phi_i exactly (D = P);
* ``sketch``: phi_i M (D = p);
* ``all_readouts``: [phi_i, s(x_i, g_i)] (D = P + p), the gradient with respect to every readout
  weight (the last layer exactly, the hidden layer of the non-linear readout sketched). Needs an
  adapter with ``readout_gradients`` (MACE).

All maps are linear in the per-atom gradient, so the structure feature is the sum over atoms.
Features and projections are float64 whatever the model's dtype.
"""

from __future__ import annotations

import torch

from uq_bias.graph import Graph
from uq_bias.models import AtomisticModel, ModelOutput

FEATURE_KINDS = ("last_layer", "sketch", "all_readouts")


def gaussian_projection(n_in: int, dim: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """(n_in, dim) matrix with independent N(0, 1/dim) entries from a fixed CPU generator."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_in, dim, generator=generator, dtype=torch.float64).to(dtype) / dim**0.5


def product_sketch(x: torch.Tensor, g: torch.Tensor, u: torch.Tensor, v: torch.Tensor):
    """(N, a), (N, b), (a, p), (b, p) -> (N, p) sqrt(p) * (x U) * (g V), row-wise sketches of
    the outer products x_i (x) g_i."""
    return (x @ u) * (g @ v) * u.shape[1] ** 0.5


def structure_sum(atom_values: torch.Tensor, batch: torch.Tensor, n_structures: int):
    """(N, D) -> (S, D) Phi(S) = sum_{i in S} phi_i."""
    out = atom_values.new_zeros((n_structures, atom_values.shape[1]))
    return out.index_add(0, batch, atom_values)


class FeatureMap(torch.nn.Module):
    """Per-atom gradient features of an adapter (see the module docstring for the kinds).

    Args:
        model: the adapter.
        kind: one of ``FEATURE_KINDS``.
        sketch_dim: p for ``sketch`` and ``all_readouts``.
        seed: seed of the projections.
    """

    def __init__(
        self, model: AtomisticModel, kind: str = "last_layer", sketch_dim: int = 512, seed: int = 0
    ):
        super().__init__()
        if kind not in FEATURE_KINDS:
            raise ValueError(f"unknown feature kind {kind!r}; choose one of {list(FEATURE_KINDS)}")
        if kind != "last_layer" and not int(sketch_dim) > 0:
            raise ValueError(f"sketch_dim must be a positive integer, got {sketch_dim}")
        if kind == "all_readouts" and not hasattr(model, "readout_gradients"):
            raise ValueError(
                f"features='all_readouts' needs an adapter with readout_gradients (MACE); "
                f"{type(model).__name__} has none: use 'last_layer' or 'sketch'"
            )
        self.kind, self.sketch_dim, self.seed = kind, int(sketch_dim), int(seed)
        dtype, device = torch.float64, model.device
        n_features = model.n_features
        if kind == "sketch":
            self.register_buffer("projection", self._random(n_features, 0, dtype, device))
        if kind == "all_readouts":
            sizes = self._hidden_sizes(model)
            self.register_buffer("u", self._random(sizes[0], 1, dtype, device))
            self.register_buffer("v", self._random(sizes[1], 2, dtype, device))
        self.dim = {"last_layer": n_features, "sketch": self.sketch_dim}.get(
            kind, n_features + self.sketch_dim
        )

    def _random(self, n_in: int, offset: int, dtype, device) -> torch.Tensor:
        return gaussian_projection(n_in, self.sketch_dim, self.seed + offset, dtype).to(device)

    @staticmethod
    def _hidden_sizes(model: AtomisticModel) -> tuple[int, int]:
        from uq_bias.models.mace import _scalar_instruction

        block = model.model.readouts[-1]
        if not hasattr(block, "linear_1"):
            raise ValueError("features='all_readouts' needs a non-linear last readout")
        ins, _ = _scalar_instruction(block.linear_1)
        return ins.path_shape[0], ins.path_shape[1] // len(model.heads)

    def forward(self, model: AtomisticModel, graph: Graph) -> tuple[ModelOutput, torch.Tensor]:
        """The model's output and the (N, D) per-atom features, float64."""
        f64 = torch.float64
        if self.kind == "all_readouts":
            grads = model.readout_gradients(graph)
            u, v = self.u.to(f64), self.v.to(f64)
            hidden = product_sketch(grads.inputs.to(f64), grads.grads.to(f64), u, v)
            return grads.output, torch.cat([grads.output.features.to(f64), hidden], dim=1)
        out = model(graph, features=True)
        phi = out.features.to(f64)
        if self.kind == "sketch":
            return out, phi @ self.projection.to(f64)
        return out, phi
