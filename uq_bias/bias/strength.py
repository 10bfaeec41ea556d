"""Relative, adaptive bias strength: the bias force a fixed fraction tau_rel of the physical force.

    tau = tau_rel * <|F|> / <|F_bias / tau|>

where <.> is the mean over the previous ``window`` distinct configurations (positions and cell:
several calls at one MD step count once) of the mean over atoms of |F_i| and of |w_i dU/dr_i|;
tau = 0 until the window is full, unless it was seeded (:meth:`RelativeStrength.seed`, e.g.
with :func:`uq_bias.bias.estimate_window` over labelled frames) or restored from an earlier
walker (:meth:`RelativeStrength.state` / :meth:`RelativeStrength.from_state`). An absolute
``tau`` needs none of this.

Symbols to names: tau_rel ``tau_rel``, <|F|> ``np.mean(forces)`` eV/A, <|w dU/dr|>
``np.mean(bias)`` eV/A, window ``window`` (configurations).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from uq_bias.graph import Graph


@dataclass
class _Sample:
    key: bytes
    tau: float


class RelativeStrength:
    """State of the relative bias strength of one walker (no globals; one per calculator).

    ``tau(key, force_mean, bias_mean)`` returns tau for a configuration identified by ``key``
    (e.g. the bytes of its positions and cell) whose mean |F_i| is ``force_mean`` (eV/A) and
    mean |w_i dU/dr_i| is ``bias_mean`` (eV/A). A repeated key (the calculator called again at
    the same positions within one MD step) returns the same tau and is not counted twice. tau
    is computed from the *previous* ``window`` configurations, 0 until there are that many.

    So that the bias is in force from the first step, the window can be filled before the
    walker starts: :meth:`seed` fills it with an estimate (e.g. means over labelled frames),
    and :meth:`state` / :meth:`from_state` save and restore it (a JSON-ready dict), so a walker
    can continue where the previous one stopped. Real samples then push the seeded ones out.
    """

    def __init__(self, tau_rel: float, window: int = 100):
        self.tau_rel = float(tau_rel)
        self.window = int(window)
        self.forces: deque[float] = deque(maxlen=self.window)
        self.bias: deque[float] = deque(maxlen=self.window)
        self._last: _Sample | None = None

    @property
    def full(self) -> bool:
        return len(self.forces) == self.window

    def current(self) -> float:
        """tau from the window as it stands: tau_rel <|F|> / <|F_bias/tau|>, 0 if not full."""
        if not self.full:
            return 0.0
        bias = float(np.mean(self.bias))
        return self.tau_rel * float(np.mean(self.forces)) / bias if bias > 0 else 0.0

    def tau(self, key: bytes, force_mean: float, bias_mean: float) -> float:
        if self._last is not None and self._last.key == key:
            return self._last.tau
        tau = self.current()
        self.forces.append(float(force_mean))
        self.bias.append(float(bias_mean))
        self._last = _Sample(key, tau)
        return tau

    def seed(self, force_mean: float, bias_mean: float) -> None:
        """Fill the window with ``window`` copies of an estimate of <|F|> and <|w dU/dr|>
        (eV/A, both finite and >= 0), replacing what it held: tau is then
        tau_rel * force_mean / bias_mean from the next call on."""
        _check_sample("seed", force_mean, bias_mean)
        self.reset()
        self.forces.extend([float(force_mean)] * self.window)
        self.bias.extend([float(bias_mean)] * self.window)

    def state(self) -> dict[str, list[float]]:
        """The window as a JSON-ready dict ``{"forces": [...], "bias": [...]}`` (eV/A, oldest
        first); restore it with :meth:`from_state`."""
        return {"forces": list(self.forces), "bias": list(self.bias)}

    @classmethod
    def from_state(cls, state: Mapping, tau_rel: float, window: int = 100) -> RelativeStrength:
        """A strength whose window holds the samples of ``state`` (from :meth:`state`).

        ``tau_rel`` and ``window`` are today's settings: of more samples than ``window`` the
        latest are kept; fewer (a window grown since, or a walker that stopped early) are
        topped up with their own means, so a non-empty state always gives a full window.
        """
        strength = cls(tau_rel, window)
        try:
            forces = [float(x) for x in state["forces"]]
            bias = [float(x) for x in state["bias"]]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                "RelativeStrength.from_state: expected a dict with lists 'forces' and 'bias' "
                f"(from RelativeStrength.state()), got {state!r}"
            ) from err
        if len(forces) != len(bias):
            raise ValueError(
                f"RelativeStrength.from_state: 'forces' has {len(forces)} samples but 'bias' "
                f"has {len(bias)}; they must pair up"
            )
        for f, b in zip(forces, bias):
            _check_sample("from_state", f, b)
        if forces:
            strength.seed(float(np.mean(forces)), float(np.mean(bias)))
            strength.forces.extend(forces)
            strength.bias.extend(bias)
        return strength

    def reset(self) -> None:
        self.forces.clear()
        self.bias.clear()
        self._last = None


def _check_sample(where: str, force_mean: float, bias_mean: float) -> None:
    for name, value in (("force_mean", force_mean), ("bias_mean", bias_mean)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(
                f"RelativeStrength.{where}: {name} must be a finite number >= 0 (eV/A), "
                f"got {value!r}"
            )


def window_sample(
    forces: torch.Tensor, du_dr: torch.Tensor, atom_weight: torch.Tensor
) -> tuple[float, float]:
    """One window sample of a structure: (mean_i |F_i|, mean_i |w_i dU/dr_i|), eV/A.

    Args:
        forces: (N, 3) unbiased forces, eV/A.  du_dr: (N, 3) dU/dr, eV/A.  atom_weight: (N,) w_i.
    """
    force_mean = float(forces.detach().double().norm(dim=1).mean())
    bias_mean = float((atom_weight[:, None] * du_dr).detach().double().norm(dim=1).mean())
    return force_mean, bias_mean


def configuration_key(graph: Graph) -> bytes:
    """Bytes identifying a configuration (positions, cell, species)."""
    parts = (graph.positions, graph.cell, graph.atomic_numbers)
    return b"".join(t.detach().cpu().numpy().tobytes() for t in parts)
