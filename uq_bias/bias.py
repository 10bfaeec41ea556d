"""Uncertainty bias: strength (absolute, relative-adaptive, per element) and biased E, F, stress.

Equations (one structure S with atoms i, uncertainty U(S) in eV, element weights w_Z >= 0):

    w_i      = w_{Z_i}                                 (atom weight, default 1)
    w_S      = mean_{i in S} w_i                       (structure weight)
    E_b      = E - tau * w_S * U                       biased energy, eV
    F_b,i    = F_i + tau * w_i * dU/dr_i               biased force, eV/A
    sigma_b  = sigma - tau * w_S * (1/V) dU/d(eps)     biased stress, eV/A^3

With all weights equal (the default: all 1) the biased forces and stress are exactly minus the
gradient of E_b (tau w plays the role of tau). With unequal weights the bias force on atom i is
scaled by w_i, so the biased forces are *not* the gradient of any energy: an element with weight 0
feels no bias at all, at the price of exact energy conservation of the biased dynamics.

Relative strength (the bias force a fixed fraction tau_rel of the physical force):

    tau = tau_rel * <|F|> / <|F_bias / tau|>

where <.> is the mean over the previous ``window`` distinct configurations (positions and cell:
several calls at one MD step count once) of the mean over atoms of |F_i| and of |w_i dU/dr_i|;
tau = 0 until the window is full, unless it was seeded (:meth:`RelativeStrength.seed`, e.g.
with :func:`estimate_window` over labelled frames) or restored from an earlier walker
(:meth:`RelativeStrength.state` / :meth:`RelativeStrength.from_state`).

Torsional projection (``project = "torsions"``, molecules only; off by default): dU/dr is
replaced by its part that keeps every bond length and bond angle (:func:`uq_bias.bonds.
project_rigid`, with the bonds of the configuration itself). The uncertainty of a model
trained near one conformation grows fastest along stiff bond and angle coordinates, so the
plain gradient mostly shakes bonds, which the walker then pays for in energy; what it should
explore, the conformations, lies along the dihedrals. The projected bias is no gradient of
any energy (like unequal weights) and needs ``split=True``; tau_rel then sets the projected
bias force against the full physical force, so a smaller tau_rel (0.1) does the same work.

Energy fade (``fade = [a, b]``, eV/atom; off by default): the bias switches itself off as the
walker climbs. With dE the walker's unbiased energy per atom above the lowest it has had,

    s(dE) = 1                                   dE <= a
          = (1 + cos(pi (dE - a) / (b - a))) / 2   a < dE < b
          = 0                                   dE >= b

and tau is replaced by s tau in E_b, F_b and sigma_b. The uncertainty gradient points up the
surface as often as along it; a bias that never lets go drives a walker into strained or
clashing geometry the potential is never used in. With the fade the walker is pushed while it
is within a thermal energy range of where it has been, coasts when it is not, and the
thermostat brings it back down. s is taken as a constant of each step (the forces are
-d/dr (E - s tau U) at fixed s), so the biased dynamics does not conserve E_b.

How the gradients are obtained (:class:`Bias`): for an ensemble with member forces, the closed
form dU/dr = -U sum_k dE_k F_k / sum_k dE_k^2 (free: the members' forces are there anyway); for
any other model (gradient features), two backward passes over one graph, -dE/dr (the model's
forces) and dU/dr. With
``BiasConfig(split=False)`` a single backward pass over E_b gives F_b and sigma_b directly,
without the unbiased and bias parts (the plain calculator's cost).

All bias arithmetic is float64 whatever the model's dtype (the uncertainty model's outputs are
float64; gradients taken with respect to a float32 graph are cast before they are combined).

Relative strength without the second pass (``split=False`` with ``tau_rel``): every
``split_every``-th configuration is a *split step* (two passes) that measures <|F|> and
<|F_bias / tau|>; the steps in between are single passes over E_b = E - tau w U with the tau of
the window as it stands. The window holds the measurements of the last ``window`` configurations
(ceil(window / split_every) of them). Per-element weights that are not all equal make F_b no
gradient of any energy, so they need ``split=True``: two backward passes on every step (about
1.5x the unbiased calculator for a small MACE).

One :class:`Bias` can follow W walkers at once (one structure each in a batched graph): each has
its own :class:`RelativeStrength`; all split on the same steps, so a batch needs two passes only
on split steps.

Symbols to names: tau ``tau``, U ``uncertainty``, dU/dr ``du_dr`` (N, 3), (1/V) dU/d(eps)
``du_deps`` (S, 3, 3), w_i ``atom_weight``, w_S ``structure_weight``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers as symbol_to_number
from ase.data import chemical_symbols

from uq_bias import keys
from uq_bias.graph import Graph
from uq_bias.models.base import energy_gradients
from uq_bias.options import option
from uq_bias.uncertainty.base import UncertaintyModel, UncertaintyOutput

GradientMode = Literal["auto", "autograd", "closed_form"]
GRADIENT_MODES = get_args(GradientMode)
Projection = Literal["none", "torsions"]
PROJECTIONS = get_args(Projection)
#: tau_rel of a BiasConfig given neither tau nor tau_rel.
DEFAULT_TAU_REL = 0.2


@dataclass(frozen=True)
class BiasConfig:
    """How strongly and where to bias: an absolute ``tau`` or a relative ``tau_rel`` (the
    default, 0.2, when neither is given); ``tau=0`` is plain MD."""

    tau: float | None = option(
        None, "Absolute strength tau of E_b = E - tau U (exclusive with tau_rel; 0: no bias)."
    )
    tau_rel: float | None = option(
        None,
        f"Relative strength: tau = tau_rel <|F|>/<|F_bias/tau|> over the window ("
        f"{DEFAULT_TAU_REL} when neither tau nor tau_rel is given).",
    )
    window: int = option(
        100,
        "Distinct configurations averaged for tau_rel (a fresh window is unbiased until full; "
        "campaign walkers start with one measured where they start).",
    )
    weights: dict[str | int, float] = option(
        {}, "Per-element weights of the bias force, e.g. {H: 0.0} (default 1 for every element)."
    )
    gradient: GradientMode = option(
        "auto",
        "How dU/dr is obtained: closed_form (ensembles: -dU/dr = U sum_k dE_k F_k / sum_k dE_k^2), "
        "autograd, or auto (closed form when the model gives member forces).",
    )
    project: Projection = option(
        "none",
        "torsions: keep only the part of the bias force that leaves bond lengths and angles "
        "unchanged (molecules; needs split: true); none: the full uncertainty gradient.",
    )
    fade: list[float] | None = option(
        None,
        "[a, b]: fade the bias out as the walker's unbiased energy rises from a to b above the "
        "lowest it has had (full strength below a, none above b); null: never fade.",
        unit="eV/atom",
    )
    split: bool = option(
        True,
        "Report unbiased and bias forces/stress beside the biased ones on every step; false: "
        "only the biased ones from one backward pass (tau_rel: two passes on every "
        "split_every-th step to measure the strength; weights must be all equal).",
    )
    split_every: int = option(
        10,
        "With tau_rel and split=false: measure the mean force and bias-force magnitudes (a "
        "second backward pass) on every this-many-th MD step, single-pass biased steps between.",
        unit="steps",
    )

    def __post_init__(self):
        if self.tau is None and self.tau_rel is None:
            object.__setattr__(self, "tau_rel", DEFAULT_TAU_REL)
        if self.tau is not None and self.tau_rel is not None:
            raise ValueError(
                f"BiasConfig: give exactly one of tau (absolute) or tau_rel (relative), got "
                f"tau={self.tau}, tau_rel={self.tau_rel}"
            )
        for name in ("tau", "tau_rel"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise ValueError(f"BiasConfig: {name} must be a finite number >= 0, got {value}")
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"BiasConfig: window must be an integer >= 1, got {self.window!r}")
        if self.gradient not in GRADIENT_MODES:
            raise ValueError(
                f"BiasConfig: unknown gradient {self.gradient!r}; choose one of {GRADIENT_MODES}"
            )
        if not (isinstance(self.split_every, int) and self.split_every >= 1):
            raise ValueError(
                f"BiasConfig: split_every must be an integer >= 1, got {self.split_every!r}"
            )
        if self.project not in PROJECTIONS:
            raise ValueError(
                f"BiasConfig: unknown project {self.project!r}; choose one of {PROJECTIONS}"
            )
        if self.project != "none" and not self.split:
            raise ValueError(
                "BiasConfig: project='torsions' makes the bias force no gradient of an energy, "
                "so it needs split=True (the bias force on its own on every step)"
            )
        if self.fade is not None:
            fade = list(self.fade)
            ok = len(fade) == 2 and all(np.isfinite(x) for x in fade)
            if not (ok and 0 <= fade[0] < fade[1]):
                raise ValueError(
                    f"BiasConfig: fade must be [a, b] with 0 <= a < b (eV/atom above the "
                    f"walker's lowest energy), got {self.fade!r}"
                )
        for element, weight in self.weights.items():
            _atomic_number(element)
            if not (np.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"BiasConfig: weights[{element!r}] must be a finite number >= 0, got {weight}"
                )


def _atomic_number(element: str | int) -> int:
    """Atomic number of a symbol or number; ValueError for an unknown element."""
    if isinstance(element, (int, np.integer)) and not isinstance(element, bool):
        if 1 <= int(element) < len(chemical_symbols):
            return int(element)
    elif isinstance(element, str) and element in symbol_to_number and element != "X":
        return symbol_to_number[element]
    raise ValueError(
        f"BiasConfig: unknown element {element!r} in weights; use a chemical symbol such as 'H' "
        "or an atomic number such as 1"
    )


def weight_table(
    weights: Mapping[str | int, float],
    atomic_numbers: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(119,) weight per atomic number: 1 by default, ``weights`` where given.

    Raises ValueError for an element the model does not know (``atomic_numbers``).
    """
    table = torch.ones(119, dtype=dtype, device=device)
    for element, weight in weights.items():
        z = _atomic_number(element)
        if z not in atomic_numbers:
            raise ValueError(
                f"bias weights: element {chemical_symbols[z]!r} is not known to the model, which "
                f"knows {[chemical_symbols[k] for k in atomic_numbers]}"
            )
        table[z] = float(weight)
    return table


def fade_factor(rise: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """s(dE) of the module docstring: 1 up to ``start``, a half cosine down to 0 at ``end``.

    Args:
        rise: (S,) dE, the unbiased energy per atom above the walker's lowest, eV/atom.
    """
    x = ((rise - start) / (end - start)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * x))


def structure_mean(values: torch.Tensor, batch: torch.Tensor, n_structures: int) -> torch.Tensor:
    """(S,) mean over each structure's atoms of ``values`` (N,)."""
    total = values.new_zeros(n_structures).index_add(0, batch, values)
    count = values.new_zeros(n_structures).index_add(0, batch, torch.ones_like(values))
    return total / count


@dataclass
class BiasTerms:
    """Biased results of a batch (S structures, N atoms).

    Attributes:
        energy, forces, stress: biased E_b (S,) eV, F_b (N, 3) eV/A, sigma_b (S, 3, 3) eV/A^3.
        node_energy: (N,) biased per-atom energies E_i - tau U w_i / N_S, summing to E_b.
        bias_energy: (S,) -tau w_S U, eV.  bias_forces: (N, 3) tau w_i dU/dr_i, eV/A (None
            with ``split=False``).
        bias_stress: (S, 3, 3) -tau w_S (1/V) dU/d(eps), eV/A^3, or None without stress.
        bias_strength: (S,) tau.
    """

    energy: torch.Tensor
    node_energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor | None
    bias_energy: torch.Tensor
    bias_forces: torch.Tensor | None
    bias_stress: torch.Tensor | None
    bias_strength: torch.Tensor


def biased_terms(
    out: UncertaintyOutput,
    du_dr: torch.Tensor,
    du_deps: torch.Tensor | None,
    tau: torch.Tensor,
    atom_weight: torch.Tensor,
    batch: torch.Tensor,
) -> BiasTerms:
    """Combine the unbiased prediction with the bias (see the module equations).

    Args:
        out: unbiased prediction with ``forces`` (N, 3) and, for stress, ``stress`` (S, 3, 3).
        du_dr: (N, 3) dU/dr, eV/A.  du_deps: (S, 3, 3) (1/V) dU/d(eps), eV/A^3, or None.
        tau: (S,) strength.  atom_weight: (N,) w_i.  batch: (N,) structure of each atom.
    """
    n_structures = out.energy.shape[0]
    w_s = structure_mean(atom_weight, batch, n_structures)
    counts = torch.bincount(batch, minlength=n_structures).to(out.energy.dtype)
    u = out.energy_uncertainty
    bias_energy = -tau * w_s * u
    bias_forces = (tau[batch] * atom_weight)[:, None] * du_dr
    node_energy = out.node_energy - (tau * u / counts)[batch] * atom_weight
    bias_stress = None if du_deps is None else -(tau * w_s)[:, None, None] * du_deps
    return BiasTerms(
        energy=out.energy + bias_energy,
        node_energy=node_energy,
        forces=out.forces + bias_forces,
        stress=None if bias_stress is None else out.stress + bias_stress,
        bias_energy=bias_energy,
        bias_forces=bias_forces,
        bias_stress=bias_stress,
        bias_strength=tau,
    )


def ensemble_uncertainty_gradient(
    uncertainty: torch.Tensor,
    member_energy: torch.Tensor,
    member_forces: torch.Tensor,
    batch: torch.Tensor,
    member_stress: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Closed-form gradient of an ensemble uncertainty U = c std_k(E_k), any ddof and c.

        dU/dr_i        = -U sum_k dE_k F_k,i / sum_k dE_k^2        (dE_k = E_k - mean_k E_k)
        (1/V) dU/deps  =  U sum_k dE_k sigma_k / sum_k dE_k^2

    i.e. -cov_k(E_k, F_k) / std_k(E_k) times the calibration factor.

    Args:
        uncertainty: (S,) U, eV.  member_energy: (K, S) eV.  member_forces: (K, N, 3) eV/A.
        batch: (N,) structure of each atom.  member_stress: (K, S, 3, 3) eV/A^3 or None.
    Returns:
        dU/dr (N, 3) eV/A and (1/V) dU/deps (S, 3, 3) eV/A^3 (None without member stress).
        Where all members agree (U = 0) the gradient is set to 0.
    """
    delta = member_energy - member_energy.mean(0, keepdim=True)  # (K, S)
    var = (delta**2).sum(0)  # (S,)
    ratio = torch.where(var > 0, uncertainty / torch.where(var > 0, var, 1.0), 0.0)  # (S,)
    du_dr = -ratio[batch][:, None] * torch.einsum("kn,knx->nx", delta[:, batch], member_forces)
    du_deps = None
    if member_stress is not None:
        du_deps = ratio[:, None, None] * torch.einsum("ks,ksxy->sxy", delta, member_stress)
    return du_dr, du_deps


def uncertainty_gradients(
    uncertainty: torch.Tensor, graph: Graph, *, stress: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dU/dr (N, 3) eV/A and, with ``stress``, (1/V) dU/d(eps) (S, 3, 3) eV/A^3 by one backward
    pass of sum_S U(S) (NaN for structures that are not periodic). ``graph.positions`` (and
    ``graph.strain`` for stress) must require grad."""
    inputs = [graph.positions] + ([graph.strain] if stress else [])
    grads = torch.autograd.grad(uncertainty.sum(), inputs, allow_unused=True)
    du_dr = grads[0] if grads[0] is not None else torch.zeros_like(graph.positions)
    if not stress:
        return du_dr, None
    du_deps = grads[1] if grads[1] is not None else torch.zeros_like(graph.strain)
    return du_dr, graph.per_volume(du_deps)


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


class Bias:
    """The bias of one calculator or of a batch of W walkers: config, element weights and (for
    tau_rel) one :class:`RelativeStrength` per walker.

    Args:
        config: a :class:`BiasConfig`.
        model: the uncertainty model it biases (checked to be one, and to know the weighted
            elements).
        walkers: W, the number of structures in every graph it evaluates (with tau_rel).
    """

    def __init__(self, config: BiasConfig, model: UncertaintyModel, walkers: int = 1):
        if not isinstance(config, BiasConfig):
            raise TypeError(f"bias must be a uq_bias.BiasConfig, got {type(config).__name__}")
        if not isinstance(model, UncertaintyModel):
            raise TypeError(
                f"a bias needs a model with uncertainty (a uq_bias.uncertainty.UncertaintyModel, "
                f"e.g. an ensemble or gradient-feature model), got {type(model).__name__}; wrap "
                "the model first (see uq_bias.uncertainty)"
            )
        self.config = config
        self.table = weight_table(config.weights, tuple(model.atomic_numbers))
        known = self.table[list(model.atomic_numbers)]
        if not config.split and bool((known != known[0]).any()):
            raise ValueError(
                f"BiasConfig(split=False) needs per-element weights that are all equal, got "
                f"{dict(config.weights)} for the model's elements; unequal weights need the bias "
                "force on its own on every step: use split=True (two backward passes per step)"
            )
        self.strengths: list[RelativeStrength] | None = None
        if config.tau_rel is not None:
            every = 1 if config.split else config.split_every
            window = math.ceil(config.window / every)
            self.strengths = [RelativeStrength(config.tau_rel, window) for _ in range(walkers)]
        #: each walker's lowest unbiased energy so far, eV/atom (with ``config.fade``)
        self.lowest: list[float] | None = None if config.fade is None else [math.inf] * walkers
        self._last_key: bytes | None = None
        self._configurations = 0

    @property
    def relative(self) -> RelativeStrength | None:
        """The first (for a calculator: the only) walker's relative strength, or None."""
        return None if self.strengths is None else self.strengths[0]

    @relative.setter
    def relative(self, value: RelativeStrength) -> None:
        if self.strengths is None:
            raise ValueError("this bias has an absolute strength (tau), not a relative one")
        self.strengths[0] = value

    def keep(self, walkers: Sequence[int]) -> None:
        """Keep only the states of ``walkers`` (positions in the current batch), in that order:
        the graphs that follow hold those walkers only."""
        if self.strengths is not None:
            self.strengths = [self.strengths[k] for k in walkers]
        if self.lowest is not None:
            self.lowest = [self.lowest[k] for k in walkers]

    def _gradients(self, out: UncertaintyOutput, graph: Graph, stress: bool):
        """(F, dU/dr, sigma, (1/V) dU/deps) for ``out`` (forces and stress filled)."""
        if self.strengths is None and self.config.tau == 0:  # no bias: no dU/dr needed
            sigma = out.stress if stress else None
            zero = None if sigma is None else torch.zeros_like(sigma)
            return out.forces, torch.zeros_like(out.forces), sigma, zero
        if self._closed_form(out, stress):
            m = out.members
            du_dr, du_deps = ensemble_uncertainty_gradient(
                out.energy_uncertainty,
                m[keys.MEMBERS_ENERGY],
                m[keys.MEMBERS_FORCES],
                graph.batch,
                m.get(keys.MEMBERS_STRESS) if stress else None,
            )
            return out.forces, du_dr, out.stress if stress else None, du_deps
        if self.config.gradient == "closed_form":
            raise ValueError(
                "BiasConfig(gradient='closed_form') needs an ensemble that reports member "
                "energies and forces (and stresses for a periodic cell); use "
                "gradient='autograd' for this model"
            )
        du_dr, du_deps = uncertainty_gradients(out.energy_uncertainty, graph, stress=stress)
        return out.forces, du_dr, out.stress if stress else None, du_deps

    def _project(self, du_dr: torch.Tensor, graph: Graph) -> torch.Tensor:
        """dU/dr of each structure projected per ``config.project`` (module docstring)."""
        if self.config.project == "none":
            return du_dr
        if bool(graph.pbc.any()):
            raise ValueError(
                "BiasConfig(project='torsions') is for molecules: the structure is periodic, "
                "where bonds have no fixed graph; use project='none'"
            )
        from uq_bias.bonds import BondGraph, project_rigid

        out = du_dr.clone()
        numbers = graph.atomic_numbers.cpu().numpy()
        for s in range(graph.n_structures):
            index = torch.nonzero(graph.batch == s).flatten()
            x = graph.positions.detach()[index].to(torch.float64)
            atoms = Atoms(numbers[index.cpu().numpy()], x.cpu().numpy())
            pairs = torch.as_tensor(BondGraph.of(atoms).rigid_pairs(), device=x.device)
            out[index] = project_rigid(du_dr[index].detach(), x, pairs)
        return out

    def evaluate(
        self, model: UncertaintyModel, graph: Graph, stress: bool
    ) -> tuple[UncertaintyOutput, BiasTerms]:
        """Unbiased prediction (forces and stress filled in) and the biased terms for ``graph``.

        ``graph.positions`` (and ``graph.strain`` with ``stress``) must require grad. With
        ``split=False`` only split steps (see the module notes) fill in the unbiased forces.
        """
        self._check_walkers(graph)
        key = self._count(graph)
        own = model.computes_forces and self.config.gradient != "autograd"
        split = self.config.split or self.config.gradient == "closed_form" or own
        if not split and not self._split_step():  # one backward pass over E_b
            return self._single_pass(model(graph), graph, stress)
        out = model(graph, forces=True, stress=stress)
        forces, du_dr, sigma, du_deps = map(_float64, self._gradients(out, graph, stress))
        du_dr = self._project(du_dr, graph)
        atom_weight = self.table.to(forces)[graph.atomic_numbers]
        tau = self._strength(graph, key, forces, du_dr, atom_weight) * self._fade(out, graph)
        return out, biased_terms(out, du_dr, du_deps, tau, atom_weight, graph.batch)

    def _check_walkers(self, graph: Graph) -> None:
        for what, state in (("strength (tau_rel)", self.strengths), ("fade", self.lowest)):
            if state is not None and graph.n_structures != len(state):
                raise ValueError(
                    f"a bias {what} follows one walker per structure: this bias follows "
                    f"{len(state)} walker(s), the graph has {graph.n_structures} structures"
                )

    def _fade(self, out: UncertaintyOutput, graph: Graph) -> torch.Tensor:
        """(S,) the fade factor s of each walker (1 without ``fade``), after taking this
        configuration's unbiased energy into the walker's lowest."""
        n = graph.n_structures
        if self.lowest is None:
            return torch.ones(n, dtype=torch.float64, device=out.energy.device)
        counts = torch.bincount(graph.batch, minlength=n).to(torch.float64)
        per_atom = out.energy.detach().to(torch.float64) / counts
        self.lowest = [min(low, e) for low, e in zip(self.lowest, per_atom.tolist())]
        rise = per_atom - per_atom.new_tensor(self.lowest)
        return fade_factor(rise, *self.config.fade)

    def _count(self, graph: Graph) -> bytes | None:
        """Count distinct configurations (repeated calls at one MD step count once)."""
        if self.strengths is None:
            return None
        key = configuration_key(graph)
        if key != self._last_key:
            self._last_key = key
            self._configurations += 1
        return key

    def _split_step(self) -> bool:
        """tau_rel with split=False: configurations 1, 1 + m, 1 + 2m, ... are measured."""
        if self.strengths is None:
            return False
        return (self._configurations - 1) % self.config.split_every == 0

    def _closed_form(self, out: UncertaintyOutput, stress: bool) -> bool:
        members = out.members
        usable = keys.MEMBERS_FORCES in members and keys.MEMBERS_ENERGY in members
        usable = usable and (not stress or keys.MEMBERS_STRESS in members)
        return usable and self.config.gradient != "autograd"

    def _single_pass(self, out: UncertaintyOutput, graph: Graph, stress: bool):
        """F_b and sigma_b from one backward pass over E_b = E - tau w_S U (weights all equal;
        tau the current strength of each walker)."""
        tau = self._current(graph, out.energy) * self._fade(out, graph).to(out.energy)
        atom_weight = self.table.to(out.energy)[graph.atomic_numbers]
        bias_energy = -tau * structure_mean(atom_weight, graph.batch, graph.n_structures)
        bias_energy = bias_energy * out.energy_uncertainty
        energy = out.energy + bias_energy
        biased = bool((tau != 0).any())  # else the gradient of E alone (cheaper)
        gradients = energy_gradients(energy if biased else out.energy, graph, stress=stress)
        forces, sigma = map(_float64, gradients)
        counts = torch.bincount(graph.batch, minlength=graph.n_structures).to(energy.dtype)
        node_energy = out.node_energy + (bias_energy / counts)[graph.batch]
        terms = BiasTerms(energy, node_energy, forces, sigma, bias_energy, None, None, tau)
        # the calculator needs forces/stress in ``out``: give it the biased ones (no extra pass)
        return replace(out, forces=forces, stress=sigma if stress else out.stress), terms

    def _current(self, graph: Graph, like: torch.Tensor) -> torch.Tensor:
        """(S,) tau as it stands, without a measurement."""
        if self.strengths is None:
            return like.new_full((graph.n_structures,), float(self.config.tau))
        return like.new_tensor([state.current() for state in self.strengths])

    def _strength(self, graph, key, forces, du_dr, atom_weight) -> torch.Tensor:
        """(S,) tau; with tau_rel each walker's window takes this configuration's means."""
        if self.strengths is None:
            return forces.new_full((graph.n_structures,), float(self.config.tau))
        n = graph.n_structures  # the window samples of window_sample, one per structure
        force = forces.detach().double().norm(dim=1)
        bias = (atom_weight[:, None] * du_dr).detach().double().norm(dim=1)
        force_mean = structure_mean(force, graph.batch, n).tolist()
        bias_mean = structure_mean(bias, graph.batch, n).tolist()
        taus = [
            state.tau(key + s.to_bytes(4, "little"), force_mean[s], bias_mean[s])
            for s, state in enumerate(self.strengths)
        ]
        return forces.new_tensor(taus)

    def sample(self, model: UncertaintyModel, graph: Graph) -> tuple[float, float]:
        """The window sample (mean |F_i|, mean |w_i dU/dr_i|, eV/A) of the one structure in
        ``graph``, without touching the window: for seeding a :class:`RelativeStrength`.
        ``graph.positions`` (and ``graph.strain`` for a periodic cell) must require grad."""
        stress = bool(graph.strain.requires_grad)
        out = model(graph, forces=True, stress=stress)
        forces, du_dr, _, _ = self._gradients(out, graph, stress)
        du_dr = self._project(_float64(du_dr), graph)
        return window_sample(forces, du_dr, self.table.to(forces)[graph.atomic_numbers])


def estimate_window(
    model: UncertaintyModel, frames: Sequence[Atoms], config: BiasConfig
) -> tuple[float, float]:
    """An estimate of the window means <|F|> and <|w dU/dr|> (eV/A) for seeding a
    :class:`RelativeStrength` without running MD: the mean over ``frames`` (e.g. the start
    structures and the labelled frames) of each frame's window sample under ``model``."""
    if not frames:
        raise ValueError("estimate_window: needs at least one frame")
    bias = Bias(replace(config, tau=None, tau_rel=config.tau_rel or 1.0, split=True), model)
    samples = []
    for atoms in frames:
        stress = bool(atoms.pbc.all())
        graph = model.graph(atoms).requires_grad_(positions=True, strain=stress)
        samples.append(bias.sample(model, graph))
    force_mean, bias_mean = np.mean(samples, axis=0)
    return float(force_mean), float(bias_mean)


def _float64(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Bias arithmetic runs in float64 whatever the model's dtype (gradients with respect to a
    float32 model's positions come back in float32)."""
    return None if tensor is None else tensor.to(torch.float64)


def bias_results(out: UncertaintyOutput, terms: BiasTerms) -> dict[str, torch.Tensor]:
    """Result tensors keyed by :mod:`uq_bias.keys`: biased energy/forces/stress, unbiased values
    and the bias terms."""
    results = {
        keys.ENERGY: terms.energy,
        keys.ENERGIES: terms.node_energy,
        keys.FORCES: terms.forces,
        keys.UNBIASED_ENERGY: out.energy,
        keys.BIAS_ENERGY: terms.bias_energy,
        keys.BIAS_STRENGTH: terms.bias_strength,
    }
    if terms.bias_forces is not None:  # not with BiasConfig(split=False)
        results[keys.UNBIASED_FORCES] = out.forces
        results[keys.BIAS_FORCES] = terms.bias_forces
    if terms.stress is not None:
        results[keys.STRESS] = terms.stress
        if terms.bias_stress is not None:
            results[keys.UNBIASED_STRESS] = out.stress
            results[keys.BIAS_STRESS] = terms.bias_stress
    return results
