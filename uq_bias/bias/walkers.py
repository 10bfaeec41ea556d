"""The bias strength of each of W walkers on one call: tau (and tau_sigma) per structure.

An absolute bias has tau = ``BiasConfig.tau`` for every walker. A relative one (``tau_rel``)
has one :class:`~uq_bias.bias.strength.RelativeStrength` per walker, and on each call

    tau_s       = tau_rel        * <|F|>_s     / <|w dU/dr / tau|>_s
    tau_sigma_s = tau_rel_stress * <|sigma|>_s / <|w_S (1/V) dU/deps|>_s   (periodic s only)

where walker s's window takes this configuration's means over its atoms (the samples of
:mod:`uq_bias.bias.strength`). Distinct configurations are counted (repeated calls at one MD
step count once: :func:`~uq_bias.bias.strength.configuration_key`), which sets the split steps
of ``split=False``: configurations 1, 1 + m, 1 + 2m, ... with m = ``split_every``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from uq_bias.bias.config import BiasConfig
from uq_bias.bias.strength import RelativeStrength, configuration_key, stress_window_sample
from uq_bias.bias.weights import structure_mean
from uq_bias.graph import Graph


class WalkerStrengths:
    """tau of W walkers (see the module docstring); ``states`` is None for an absolute tau."""

    def __init__(self, config: BiasConfig, walkers: int, split: bool | None = None):
        """``split``: whether every configuration is measured (two passes on every step); by
        default ``config.split``, but a bias splits anyway for some models and gradients."""
        self.config = config
        self.states: list[RelativeStrength] | None = None
        if config.tau_rel is not None:
            every = 1 if (config.split if split is None else split) else config.split_every
            window = math.ceil(config.window / every)
            self.states = [
                RelativeStrength(config.tau_rel, window, config.tau_rel_stress)
                for _ in range(walkers)
            ]
        self._last_key: bytes | None = None
        self._configurations = 0

    @property
    def absent(self) -> bool:
        """True when the bias is off (absolute tau = 0): no dU/dr is needed."""
        return self.states is None and self.config.tau == 0

    def keep(self, walkers: Sequence[int]) -> None:
        """Keep only the states of ``walkers`` (positions in the current batch), in order."""
        if self.states is not None:
            self.states = [self.states[k] for k in walkers]

    def count(self, graph: Graph) -> bytes | None:
        """The configuration's key (relative strength only), counting a new configuration."""
        if self.states is None:
            return None
        key = configuration_key(graph)
        if key != self._last_key:
            self._last_key = key
            self._configurations += 1
        return key

    def split_step(self) -> bool:
        """Whether this configuration is measured (relative strength with ``split=False``)."""
        if self.states is None:
            return False
        return (self._configurations - 1) % self.config.split_every == 0

    def current(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """(S,) tau as it stands, without a measurement."""
        if self.states is None:
            return like.new_full((n,), float(self.config.tau))
        return like.new_tensor([state.current() for state in self.states])

    def forces(self, graph: Graph, key, forces, du_dr, atom_weight) -> torch.Tensor:
        """(S,) tau; each walker's window takes this configuration's means (relative)."""
        n = graph.n_structures
        if self.states is None:
            return forces.new_full((n,), float(self.config.tau))
        force = forces.detach().double().norm(dim=1)
        bias = (atom_weight[:, None] * du_dr).detach().double().norm(dim=1)
        force_mean = structure_mean(force, graph.batch, n).tolist()
        bias_mean = structure_mean(bias, graph.batch, n).tolist()
        taus = [
            state.tau(key + s.to_bytes(4, "little"), force_mean[s], bias_mean[s])
            for s, state in enumerate(self.states)
        ]
        return forces.new_tensor(taus)

    def stress(self, graph: Graph, key, sigma, du_deps, atom_weight) -> torch.Tensor:
        """(S,) tau_sigma before the fade: 0 with ``tau_rel_stress = 0`` and for walkers that
        are not periodic; else each walker's stress window takes this configuration's
        ||sigma||_F and ||w_S (1/V) dU/deps||_F."""
        n = graph.n_structures
        if not self.config.tau_rel_stress:
            return sigma.new_zeros(n)
        w_s = structure_mean(atom_weight, graph.batch, n).tolist()
        periodic = graph.periodic.tolist()
        taus = []
        for s, state in enumerate(self.states):
            # the setting is the bias's: a window restored by RelativeStrength.from_state(state,
            # tau_rel, window) elsewhere may not carry it
            state.tau_rel_stress = float(self.config.tau_rel_stress)
            if not periodic[s]:
                taus.append(0.0)
                continue
            stress_mean, bias_mean = stress_window_sample(sigma[s], du_deps[s], w_s[s])
            taus.append(state.tau_stress(key + s.to_bytes(4, "little"), stress_mean, bias_mean))
        return sigma.new_tensor(taus)
