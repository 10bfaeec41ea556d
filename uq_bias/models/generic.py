"""Generic adapter: any torch module that maps a :class:`~uq_bias.graph.Graph` to per-atom energies.

Contract for the wrapped module: ``module(graph) -> (n_atoms,)`` per-atom energies in eV, computed
from ``uq_bias.graph.edge_vectors(graph)`` (or ``strained(graph)``) so that forces and stress come
out by autograd, and with a named ``torch.nn.Linear`` (one output) whose output enters E_i with
unit weight:

    E_i = W x_i + b + (terms independent of W, b),

so that the last-layer features are phi_i = [x_i, 1] (the 1 only if the layer has a bias).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence

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
        self.cutoff = _checked_cutoff(cutoff)
        self.atomic_numbers = _checked_numbers(atomic_numbers)
        dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()}
        if len(dtypes) > 1:
            raise ValueError(
                f"the module's parameters mix {sorted(map(str, dtypes))}; convert it to one "
                "dtype (module.double() or module.float()) before wrapping it"
            )

    @property
    def n_features(self) -> int:
        return self.last_layer.in_features + (self.last_layer.bias is not None)

    def forward(self, graph: Graph, features: bool = False) -> ModelOutput:
        self._check_graph(graph)
        captured: list[torch.Tensor] = []
        handle = None
        if features:
            handle = self.last_layer.register_forward_pre_hook(
                lambda module, args: captured.append(args[0])
            )
        try:
            out = self.module(graph)
        finally:
            if handle is not None:
                handle.remove()
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the module returned a {type(out).__name__}; it must return a tensor of "
                "per-atom energies (n_atoms,), eV"
            )
        node_energy = out.reshape(-1)
        if node_energy.shape[0] != graph.n_atoms:
            raise ValueError(
                f"the module returned {node_energy.shape[0]} energies for {graph.n_atoms} atoms; "
                "it must return one energy per atom"
            )
        energy = torch.zeros(
            graph.n_structures, dtype=node_energy.dtype, device=node_energy.device
        ).index_add(0, graph.batch, node_energy)
        phi = self._features(captured, graph) if features else None
        return ModelOutput(energy=energy, node_energy=node_energy, features=phi)

    def _check_graph(self, graph: Graph) -> None:
        """The graph was built for this model: its cutoff and its dtype."""
        if abs(graph.cutoff - self.cutoff) > 1e-12:
            raise ValueError(
                f"the graph was built with cutoff {graph.cutoff} A, the model has {self.cutoff} "
                "A; build it with model.graph(atoms)"
            )
        if graph.positions.dtype != self.dtype:
            raise ValueError(
                f"the graph is {graph.positions.dtype} and the model {self.dtype}; build it with "
                "model.graph(atoms), or convert the model (model.to(dtype))"
            )

    def _features(self, captured: list[torch.Tensor], graph: Graph) -> torch.Tensor:
        """phi_i = [x_i, 1] from the one input x (n_atoms, in_features) of the last layer."""
        if len(captured) != 1:
            raise ValueError(
                f"last_layer {self._last_layer_name()!r} was called {len(captured)} times in one "
                "forward pass; last-layer features need it called once, on the per-atom features"
            )
        x = captured[0]
        if tuple(x.shape) != (graph.n_atoms, self.last_layer.in_features):
            raise ValueError(
                f"last_layer {self._last_layer_name()!r} took an input of shape "
                f"{tuple(x.shape)}; last-layer features need one row per atom, ({graph.n_atoms}, "
                f"{self.last_layer.in_features}) (apply it to atoms, not edges)"
            )
        if self.last_layer.bias is None:
            return x
        return torch.cat([x, torch.ones_like(x[:, :1])], 1)

    def _last_layer_name(self) -> str:
        """The dotted name of the last layer in the module (for messages only: a walk over
        every submodule, kept off the per-step path)."""
        return next(n for n, m in self.module.named_modules() if m is self.last_layer)

    def last_layer_parameters(self) -> list[torch.nn.Parameter]:
        layer = self.last_layer
        return [layer.weight] + ([layer.bias] if layer.bias is not None else [])

    def last_layer_gradient(self, energy: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(energy, self.last_layer_parameters(), retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads])


def _checked_cutoff(cutoff) -> float:
    """``cutoff`` as a float, A; ValueError unless it is a finite number > 0."""
    try:
        value = float(cutoff)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"cutoff must be a finite number of A > 0, got {cutoff!r}")
    return value


def _checked_numbers(atomic_numbers) -> tuple[int, ...]:
    """The sorted atomic numbers; ValueError unless a non-empty sequence of integers 1-118."""
    if isinstance(atomic_numbers, (str, bytes)) or not isinstance(atomic_numbers, Iterable):
        raise ValueError(
            f"atomic_numbers must be a sequence of integers such as [1, 6, 8], got "
            f"{atomic_numbers!r}"
        )
    given = list(atomic_numbers)
    try:  # ints, numpy and 0-d torch integers; not floats or text
        numbers = [operator.index(z) for z in given if not isinstance(z, bool)]
    except TypeError:
        numbers = []
    if not given or len(numbers) < len(given) or not all(1 <= z <= 118 for z in numbers):
        raise ValueError(f"atomic_numbers must be integers from 1 to 118 (H to Og), got {given!r}")
    return tuple(sorted(set(numbers)))
