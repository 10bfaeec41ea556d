"""Relative, adaptive bias strength: the bias force a fixed fraction tau_rel of the physical force,
and (optionally) the bias stress a fixed fraction tau_rel_stress of the physical stress.

    tau       = tau_rel        * <|F|>     / <|F_bias / tau|>
    tau_sigma = tau_rel_stress * <|sigma|> / <|sigma_bias / tau_sigma|>

where <.> is the mean over the previous ``window`` distinct configurations (positions and cell:
several calls at one MD step count once) of, for the forces, the mean over atoms of |F_i| and of
|w_i dU/dr_i| and, for the stress (periodic cells only), of the Frobenius norms ||sigma||_F and
||w_S (1/V) dU/deps||_F of the 3x3 unbiased stress and of the bias stress per unit strength.
tau = 0 (tau_sigma = 0) until its window is full, unless it was seeded
(:meth:`RelativeStrength.seed`, e.g. with :func:`uq_bias.bias.estimate_window` over labelled
frames) or restored from an earlier walker (:meth:`RelativeStrength.state` /
:meth:`RelativeStrength.from_state`). An absolute ``tau`` needs none of this.

The stress window is kept only with ``tau_rel_stress`` > 0 (``BiasConfig``). Without it (None)
the bias stress has the force strength tau, and sigma_b is the strain derivative of E_b;
``tau_rel_stress = 0`` switches the stress bias off.

Symbols to names: tau_rel ``tau_rel``, <|F|> ``np.mean(forces)`` eV/A, <|w dU/dr|>
``np.mean(bias)`` eV/A, tau_rel_stress ``tau_rel_stress``, <||sigma||_F> ``np.mean(stress)``
eV/A^3, <||w_S (1/V) dU/deps||_F> ``np.mean(bias_stress)`` eV/A^3, window ``window``
(configurations).
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

    The stress window works alike: ``tau_stress(key, stress_mean, bias_stress_mean)`` returns
    tau_sigma from the previous ``window`` periodic configurations (||sigma||_F and
    ||w_S (1/V) dU/deps||_F, eV/A^3), 0 until full or without ``tau_rel_stress`` (> 0).

    So that the bias is in force from the first step, the windows can be filled before the
    walker starts: :meth:`seed` fills them with an estimate (e.g. means over labelled frames),
    and :meth:`state` / :meth:`from_state` save and restore them (a JSON-ready dict), so a walker
    can continue where the previous one stopped. Real samples then push the seeded ones out.
    """

    def __init__(self, tau_rel: float, window: int = 100, tau_rel_stress: float | None = None):
        self.tau_rel = float(tau_rel)
        self.window = int(window)
        #: the stress strength ratio (None or 0: no stress window; see the module notes)
        self.tau_rel_stress = None if tau_rel_stress is None else float(tau_rel_stress)
        self.forces: deque[float] = deque(maxlen=self.window)
        self.bias: deque[float] = deque(maxlen=self.window)
        self.stress: deque[float] = deque(maxlen=self.window)
        self.bias_stress: deque[float] = deque(maxlen=self.window)
        self._last: _Sample | None = None
        self._last_stress: _Sample | None = None

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

    @property
    def stressed(self) -> bool:
        """Whether the bias stress has its own strength (``tau_rel_stress`` > 0)."""
        return bool(self.tau_rel_stress)

    def current_stress(self) -> float:
        """tau_sigma from the stress window as it stands: tau_rel_stress <||sigma||_F> /
        <||sigma_bias / tau_sigma||_F>; 0 if not full or without ``tau_rel_stress``."""
        if not self.stressed or len(self.stress) < self.window:
            return 0.0
        bias = float(np.mean(self.bias_stress))
        return self.tau_rel_stress * float(np.mean(self.stress)) / bias if bias > 0 else 0.0

    def tau_stress(self, key: bytes, stress_mean: float, bias_stress_mean: float) -> float:
        """tau_sigma for the periodic configuration ``key`` with ||sigma||_F = ``stress_mean``
        and ||w_S (1/V) dU/deps||_F = ``bias_stress_mean`` (eV/A^3); the sample then enters
        the stress window (once per key)."""
        if self._last_stress is not None and self._last_stress.key == key:
            return self._last_stress.tau
        tau = self.current_stress()
        self.stress.append(float(stress_mean))
        self.bias_stress.append(float(bias_stress_mean))
        self._last_stress = _Sample(key, tau)
        return tau

    def seed(
        self,
        force_mean: float,
        bias_mean: float,
        stress_mean: float | None = None,
        bias_stress_mean: float | None = None,
    ) -> None:
        """Fill the window with ``window`` copies of an estimate of <|F|> and <|w dU/dr|>
        (eV/A, both finite and >= 0), replacing what it held: tau is then
        tau_rel * force_mean / bias_mean from the next call on. With ``stress_mean`` and
        ``bias_stress_mean`` (eV/A^3) the stress window likewise, else it is emptied."""
        _check_sample("seed", force_mean, bias_mean)
        self.reset()
        self.forces.extend([float(force_mean)] * self.window)
        self.bias.extend([float(bias_mean)] * self.window)
        if stress_mean is not None or bias_stress_mean is not None:
            _check_sample("seed", stress_mean, bias_stress_mean, unit="eV/A^3")
            self.stress.extend([float(stress_mean)] * self.window)
            self.bias_stress.extend([float(bias_stress_mean)] * self.window)

    def state(self) -> dict[str, list[float]]:
        """The window as a JSON-ready dict ``{"forces": [...], "bias": [...]}`` (eV/A, oldest
        first), with ``"stress"`` and ``"bias_stress"`` (eV/A^3) when the stress window holds
        samples; restore it with :meth:`from_state`."""
        state = {"forces": list(self.forces), "bias": list(self.bias)}
        if self.stress:
            state |= {"stress": list(self.stress), "bias_stress": list(self.bias_stress)}
        return state

    @classmethod
    def from_state(
        cls,
        state: Mapping,
        tau_rel: float,
        window: int = 100,
        tau_rel_stress: float | None = None,
    ) -> RelativeStrength:
        """A strength whose windows hold the samples of ``state`` (from :meth:`state`).

        ``tau_rel``, ``window`` and ``tau_rel_stress`` are today's settings: of more samples
        than ``window`` the latest are kept; fewer (a window grown since, or a walker that
        stopped early) are topped up with their own means, so a non-empty state always gives a
        full window. The stress samples are restored whenever ``state`` holds them (the
        :class:`~uq_bias.bias.Bias` that uses the strength sets ``tau_rel_stress``).
        """
        strength = cls(tau_rel, window, tau_rel_stress)
        forces, bias = _pairs(state, "forces", "bias", required=True)
        stress, bias_stress = _pairs(state, "stress", "bias_stress", required=False)
        for f, b in zip(forces, bias):
            _check_sample("from_state", f, b)
        for f, b in zip(stress, bias_stress):
            _check_sample("from_state", f, b, unit="eV/A^3")
        if forces:
            strength.seed(float(np.mean(forces)), float(np.mean(bias)))
            strength.forces.extend(forces)
            strength.bias.extend(bias)
        if stress:
            fill = [float(np.mean(stress))] * window, [float(np.mean(bias_stress))] * window
            strength.stress.extend(fill[0] + stress)
            strength.bias_stress.extend(fill[1] + bias_stress)
        return strength

    def reset(self) -> None:
        for window in (self.forces, self.bias, self.stress, self.bias_stress):
            window.clear()
        self._last = self._last_stress = None


def _pairs(state: Mapping, first: str, second: str, *, required: bool):
    """The paired sample lists ``state[first]``, ``state[second]`` (([], []) when absent and
    not ``required``)."""
    if not required and first not in state and second not in state:
        return [], []
    try:
        a = [float(x) for x in state[first]]
        b = [float(x) for x in state[second]]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"RelativeStrength.from_state: expected a dict with lists '{first}' and '{second}' "
            f"(from RelativeStrength.state()), got {state!r}"
        ) from err
    if len(a) != len(b):
        raise ValueError(
            f"RelativeStrength.from_state: '{first}' has {len(a)} samples but '{second}' "
            f"has {len(b)}; they must pair up"
        )
    return a, b


def _check_sample(where: str, force_mean, bias_mean, unit: str = "eV/A") -> None:
    names = ("force_mean", "bias_mean") if unit == "eV/A" else ("stress_mean", "bias_stress_mean")
    for name, value in zip(names, (force_mean, bias_mean)):
        if value is None or not (np.isfinite(value) and value >= 0):
            raise ValueError(
                f"RelativeStrength.{where}: {name} must be a finite number >= 0 ({unit}), "
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


def stress_window_sample(stress: torch.Tensor, du_deps: torch.Tensor, w_s: float):
    """One stress window sample of a periodic structure: (||sigma||_F, ||w_S (1/V) dU/deps||_F),
    eV/A^3, from the (3, 3) unbiased stress, (1/V) dU/deps and the structure weight w_S."""
    stress_mean = float(stress.detach().double().norm())
    bias_mean = float(w_s * du_deps.detach().double().norm())
    return stress_mean, bias_mean


def configuration_key(graph: Graph) -> bytes:
    """Bytes identifying a configuration (positions, cell, species)."""
    parts = (graph.positions, graph.cell, graph.atomic_numbers)
    return b"".join(t.detach().cpu().numpy().tobytes() for t in parts)
