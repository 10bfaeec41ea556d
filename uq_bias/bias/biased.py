"""The bias of one calculator or of a batch of W walkers: the parts of :mod:`uq_bias.bias`
put together on each call.

How the gradients are obtained on a call: for an ensemble with member forces, the closed form of
:mod:`uq_bias.bias.gradients`; for any other model (gradient features), two backward passes over
one graph, -dE/dr (the model's forces) and dU/dr. With ``BiasConfig(split=False)`` a single
backward pass over E_b gives F_b and sigma_b directly, without the unbiased and bias parts (the
plain calculator's cost).

Relative strength without the second pass (``split=False`` with ``tau_rel``): every
``split_every``-th configuration is a *split step* (two passes) that measures <|F|> and
<|F_bias / tau|>; the steps in between are single passes over E_b = E - tau w U with the tau of
the window as it stands. The window holds the measurements of the last ``window`` configurations
(ceil(window / split_every) of them). Per-element weights that are not all equal make F_b no
gradient of any energy, so they need ``split=True``: two backward passes on every step (about
1.5x the unbiased calculator for a small MACE).

One :class:`Bias` follows W walkers at once (one structure each in a batched graph): each has
its own :class:`~uq_bias.bias.strength.RelativeStrength` and fade state; all split on the same
steps, so a batch needs two passes only on split steps.

The bias stress: with ``tau_rel_stress`` unset, sigma_b = sigma - tau w_S (1/V) dU/deps, the
strain derivative of E_b (1/V) dE_b/deps; with it, tau_sigma (the walker's stress window, times
the fade) replaces tau there (0: no stress bias), and sigma_b is no strain derivative of E_b
(see :mod:`uq_bias.bias.terms`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import torch

from uq_bias import keys
from uq_bias.bias.config import BiasConfig
from uq_bias.bias.fade import Fade
from uq_bias.bias.gradients import ensemble_uncertainty_gradient, uncertainty_gradients
from uq_bias.bias.projection import project_torsions
from uq_bias.bias.strength import RelativeStrength
from uq_bias.bias.terms import BiasTerms, biased_terms
from uq_bias.bias.walkers import WalkerStrengths
from uq_bias.bias.weights import structure_mean, weight_table
from uq_bias.graph import Graph
from uq_bias.models.base import energy_gradients
from uq_bias.uncertainty.base import UncertaintyModel, UncertaintyOutput

_log = logging.getLogger(__name__)


class Bias:
    """The bias of one calculator or of a batch of W walkers: config, element weights and (for
    tau_rel) one :class:`RelativeStrength` per walker.

    Args:
        config: a :class:`BiasConfig`.
        model: the uncertainty model it biases (checked to be one, and to know the weighted
            elements).
        walkers: W, the number of structures in every graph it evaluates (with tau_rel).
        temperature: the walkers' thermostat temperature, K, which sets a ``fade_kt`` fade
            (:meth:`BiasConfig.fade_range`); None: only an absolute ``fade`` applies (a
            walker sets it with :meth:`set_temperature`).
    """

    def __init__(
        self,
        config: BiasConfig,
        model: UncertaintyModel,
        walkers: int = 1,
        temperature: float | None = None,
    ):
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
        # an ensemble's own forces (or the closed form) need both passes on every step, and
        # then every configuration enters the tau_rel window, not every split_every-th one
        own = model.computes_forces and config.gradient != "autograd"
        self._split = config.split or config.gradient == "closed_form" or own
        self.taus = WalkerStrengths(config, walkers, split=self._split)
        fade = config.fade_range(temperature)
        self.fade = None if fade is None else Fade(*fade, walkers=walkers)
        self._walkers = walkers
        self._projected: list[bool] | None = None  # what project="auto" did, logged once

    def set_temperature(self, temperature: float | None) -> None:
        """Set the fade for walkers at ``temperature`` (K): ``fade`` if given, else
        ``fade_kt`` k_B T (a fresh fade state: each walker's lowest energy is forgotten)."""
        fade = self.config.fade_range(temperature)
        walkers = self._walkers if self.strengths is None else len(self.strengths)
        self.fade = None if fade is None else Fade(*fade, walkers=walkers)

    @property
    def strengths(self) -> list[RelativeStrength] | None:
        """One :class:`RelativeStrength` per walker (tau_rel), or None (absolute tau)."""
        return self.taus.states

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
        self.taus.keep(walkers)
        if self.fade is not None:
            self.fade.keep(walkers)

    def _gradients(self, out: UncertaintyOutput, graph: Graph, stress: bool):
        """(F, dU/dr, sigma, (1/V) dU/deps) for ``out`` (forces and stress filled)."""
        if self.taus.absent:  # no bias: no dU/dr needed
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
        """dU/dr of each structure projected per ``config.project`` (``auto``: molecules with
        a backbone rotor, see :mod:`uq_bias.bias.projection`; what it chose is logged once)."""
        project = self.config.project
        if self.taus.absent or project == "none" or (project == "auto" and not self.config.split):
            return du_dr
        projected, done = project_torsions(du_dr, graph, auto=project == "auto")
        if project == "auto" and self._projected is None:
            self._projected = done
            _log.info(
                "bias: project='auto' projects the bias on torsions for %d of %d structure(s) "
                "(molecules with a rotatable bond); the others get the full uncertainty gradient",
                sum(done),
                len(done),
            )
        return projected

    def evaluate(
        self, model: UncertaintyModel, graph: Graph, stress: bool
    ) -> tuple[UncertaintyOutput, BiasTerms]:
        """Unbiased prediction (forces and stress filled in) and the biased terms for ``graph``.

        ``graph.positions`` (and ``graph.strain`` with ``stress``) must require grad. With
        ``split=False`` only split steps (see the module notes) fill in the unbiased forces.
        """
        self._check_walkers(graph)
        key = self.taus.count(graph)
        if not self._split and not self.taus.split_step():  # one backward pass over E_b
            return self._single_pass(model(graph), graph, stress)
        out = model(graph, forces=True, stress=stress)
        forces, du_dr, sigma, du_deps = map(_float64, self._gradients(out, graph, stress))
        du_dr = self._project(du_dr, graph)
        atom_weight = self.table.to(forces)[graph.atomic_numbers]
        fade = self._fade(out, graph)
        tau = self.taus.forces(graph, key, forces, du_dr, atom_weight) * fade
        tau_stress = None
        if du_deps is not None and self.config.tau_rel_stress is not None:
            tau_stress = self.taus.stress(graph, key, sigma, du_deps, atom_weight) * fade
        terms = biased_terms(out, du_dr, du_deps, tau, atom_weight, graph.batch, tau_stress)
        return out, terms

    def _check_walkers(self, graph: Graph) -> None:
        fade = None if self.fade is None else self.fade.lowest
        for what, state in (("strength (tau_rel)", self.strengths), ("fade", fade)):
            if state is not None and graph.n_structures != len(state):
                raise ValueError(
                    f"a bias {what} follows one walker per structure: this bias follows "
                    f"{len(state)} walker(s), the graph has {graph.n_structures} structures"
                )

    def _fade(self, out: UncertaintyOutput, graph: Graph) -> torch.Tensor:
        """(S,) the fade factor s of each walker (1 without ``fade``)."""
        if self.fade is None:
            return torch.ones(graph.n_structures, dtype=torch.float64, device=out.energy.device)
        counts = torch.bincount(graph.batch, minlength=graph.n_structures)
        return self.fade.factor(out.energy, counts)

    def _closed_form(self, out: UncertaintyOutput, stress: bool) -> bool:
        members = out.members
        usable = keys.MEMBERS_FORCES in members and keys.MEMBERS_ENERGY in members
        usable = usable and (not stress or keys.MEMBERS_STRESS in members)
        return usable and self.config.gradient != "autograd"

    def _single_pass(self, out: UncertaintyOutput, graph: Graph, stress: bool):
        """F_b and sigma_b from one backward pass over E_b = E - tau w_S U (weights all equal;
        tau the current strength of each walker)."""
        tau = self.taus.current(graph.n_structures, out.energy)
        tau = tau * self._fade(out, graph).to(out.energy)
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


def _float64(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """Bias arithmetic runs in float64 whatever the model's dtype (gradients with respect to a
    float32 model's positions come back in float32)."""
    return None if tensor is None else tensor.to(torch.float64)
