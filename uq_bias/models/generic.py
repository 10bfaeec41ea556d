"""Generic adapter: any torch module that maps a :class:`~uq_bias.graph.Graph` to per-atom energies.

Contract for the wrapped module: ``module(graph) -> (n_atoms,)`` per-atom energies in eV, computed
from ``uq_bias.graph.edge_vectors(graph)`` (or ``strained(graph)``) so that forces and stress come
out by autograd, and with a named ``torch.nn.Linear`` (one output) whose output enters E_i with
unit weight:

    E_i = W x_i + b + (terms independent of W, b),

so that the last-layer features are phi_i = [x_i, 1] (the 1 only if the layer has a bias).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uq_bias.graph import Graph
from uq_bias.models.base import AtomisticModel, ModelOutput


class GenericAdapter(AtomisticModel):
    """Wrap a user's module.

    Args:
        module: maps a Graph to per-atom energies (n_atoms,), eV.
        last_layer: dotted name of the ``torch.nn.Linear`` (out_features=1) in ``module``.
        cutoff: neighbour-list cutoff, A.
        atomic_numbers: the elements the module knows.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        last_layer: str,
        cutoff: float,
        atomic_numbers: Sequence[int],
    ):
        super().__init__()
        self.module = module
        try:
            layer = module.get_submodule(last_layer)
        except AttributeError as err:
            names = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
            raise ValueError(
                f"no submodule {last_layer!r} in {type(module).__name__}; its Linear layers are "
                f"{names}"
            ) from err
        if not isinstance(layer, torch.nn.Linear) or layer.out_features != 1:
            raise ValueError(
                f"last_layer {last_layer!r} must be a torch.nn.Linear with out_features=1, got "
                f"{layer}"
            )
        self.last_layer = layer
        self.cutoff = float(cutoff)
        self.atomic_numbers = tuple(sorted(int(z) for z in atomic_numbers))

    @property
    def n_features(self) -> int:
        return self.last_layer.in_features + (self.last_layer.bias is not None)

    def forward(self, graph: Graph, features: bool = False) -> ModelOutput:
        captured: list[torch.Tensor] = []
        handle = None
        if features:
            handle = self.last_layer.register_forward_pre_hook(
                lambda module, args: captured.append(args[0])
            )
        try:
            node_energy = self.module(graph).reshape(-1)
        finally:
            if handle is not None:
                handle.remove()
        if node_energy.shape[0] != graph.n_atoms:
            raise ValueError(
                f"the module returned {node_energy.shape[0]} energies for {graph.n_atoms} atoms; "
                "it must return one energy per atom"
            )
        energy = torch.zeros(
            graph.n_structures, dtype=node_energy.dtype, device=node_energy.device
        ).index_add(0, graph.batch, node_energy)
        phi = None
        if features:
            x = captured[0].reshape(graph.n_atoms, -1)
            phi = (
                torch.cat([x, torch.ones_like(x[:, :1])], 1)
                if self.last_layer.bias is not None
                else x
            )
        return ModelOutput(energy=energy, node_energy=node_energy, features=phi)

    def last_layer_parameters(self) -> list[torch.nn.Parameter]:
        layer = self.last_layer
        return [layer.weight] + ([layer.bias] if layer.bias is not None else [])

    def last_layer_gradient(self, energy: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(energy, self.last_layer_parameters(), retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads])
