"""Uncertainty bias: push MD towards what the model does not know.

One structure S with atoms i, uncertainty U(S) in eV, element weights w_Z >= 0:

    E_b      = E - tau * w_S * U                       biased energy, eV
    F_b,i    = F_i + tau * w_i * dU/dr_i               biased force, eV/A
    sigma_b  = sigma - tau * w_S * (1/V) dU/d(eps)     biased stress, eV/A^3

(tau_sigma in place of tau in sigma_b with ``BiasConfig.tau_rel_stress``: the bias stress then has
a strength of its own and sigma_b is no strain derivative of E_b.)

One idea per module:

* :mod:`~uq_bias.bias.config`: :class:`BiasConfig`, every option of the bias, declared once;
* :mod:`~uq_bias.bias.weights`: per-element weights w_i and the structure weight w_S;
* :mod:`~uq_bias.bias.strength`: the relative, adaptive strength tau = tau_rel <|F|>/<|F_bias/tau|>
  (and tau_sigma = tau_rel_stress <|sigma|>/<|sigma_bias/tau_sigma|> for the stress);
* :mod:`~uq_bias.bias.walkers`: tau (and tau_sigma) of each of W walkers on one call;
* :mod:`~uq_bias.bias.gradients`: dU/dr and (1/V) dU/deps (closed form for ensembles, autograd);
* :mod:`~uq_bias.bias.projection`: the torsional projection of the bias force;
* :mod:`~uq_bias.bias.fade`: the fade of the bias as a walker climbs;
* :mod:`~uq_bias.bias.terms`: the biased energy, forces and stress from those parts;
* :mod:`~uq_bias.bias.biased`: :class:`Bias`, which puts them together for one calculator or a
  batch of walkers;
* :mod:`~uq_bias.bias.seeding`: a walker's strength window estimated on frames, without MD.
"""

from uq_bias.bias.biased import Bias
from uq_bias.bias.config import DEFAULT_TAU_REL, GRADIENT_MODES, PROJECTIONS, BiasConfig
from uq_bias.bias.fade import Fade, fade_factor
from uq_bias.bias.gradients import ensemble_uncertainty_gradient, uncertainty_gradients
from uq_bias.bias.projection import project_torsions
from uq_bias.bias.seeding import estimate_state, estimate_window
from uq_bias.bias.strength import (
    RelativeStrength,
    configuration_key,
    stress_window_sample,
    window_sample,
)
from uq_bias.bias.terms import BiasTerms, bias_results, biased_terms
from uq_bias.bias.weights import structure_mean, weight_table

__all__ = [
    "DEFAULT_TAU_REL",
    "GRADIENT_MODES",
    "PROJECTIONS",
    "Bias",
    "BiasConfig",
    "BiasTerms",
    "Fade",
    "RelativeStrength",
    "bias_results",
    "biased_terms",
    "configuration_key",
    "ensemble_uncertainty_gradient",
    "estimate_state",
    "estimate_window",
    "fade_factor",
    "project_torsions",
    "stress_window_sample",
    "structure_mean",
    "uncertainty_gradients",
    "weight_table",
    "window_sample",
]
