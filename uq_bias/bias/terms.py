"""The biased energy, forces and stress of a batch (S structures, N atoms).

    E_b      = E - tau * w_S * U                             biased energy, eV
    F_b,i    = F_i + tau * w_i * dU/dr_i                     biased force, eV/A
    sigma_b  = sigma - tau_sigma * w_S * (1/V) dU/d(eps)     biased stress, eV/A^3
    E_b,i    = E_i - tau * w_i * U / N_S                     biased per-atom energy (sums to E_b)

tau (S,) is the strength of each structure's walker (absolute, or relative times the fade);
tau_sigma (S,) that of the bias stress: tau itself by default, so that F_b and sigma_b are
minus the position and (1/V) the strain derivative of one E_b; a separate strength
(``BiasConfig.tau_rel_stress``, :mod:`uq_bias.bias.strength`) makes sigma_b *not* the strain
derivative of E_b (as unequal element weights make F_b no gradient of any energy): the cell then
feels a bias of its own size, and the biased NPT dynamics conserves no energy. w_i and w_S are
the element weights (:mod:`uq_bias.bias.weights`). All bias arithmetic is float64 whatever the
model's dtype.

Symbols to names: tau ``tau``, tau_sigma ``tau_stress``, U ``out.energy_uncertainty``, dU/dr
``du_dr`` (N, 3), (1/V) dU/d(eps) ``du_deps`` (S, 3, 3), w_i ``atom_weight``, w_S ``w_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uq_bias import keys
from uq_bias.bias.weights import structure_mean
from uq_bias.uncertainty.base import UncertaintyOutput


@dataclass
class BiasTerms:
    """Biased results of a batch (S structures, N atoms).

    Attributes:
        energy, forces, stress: biased E_b (S,) eV, F_b (N, 3) eV/A, sigma_b (S, 3, 3) eV/A^3.
        node_energy: (N,) biased per-atom energies E_i - tau U w_i / N_S, summing to E_b.
        bias_energy: (S,) -tau w_S U, eV.  bias_forces: (N, 3) tau w_i dU/dr_i, eV/A (None
            with ``split=False``).
        bias_stress: (S, 3, 3) -tau_sigma w_S (1/V) dU/d(eps), eV/A^3, or None without
            stress.
        bias_strength: (S,) tau.
        bias_stress_strength: (S,) tau_sigma, or None without stress.
    """

    energy: torch.Tensor
    node_energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor | None
    bias_energy: torch.Tensor
    bias_forces: torch.Tensor | None
    bias_stress: torch.Tensor | None
    bias_strength: torch.Tensor
    bias_stress_strength: torch.Tensor | None = None


def biased_terms(
    out: UncertaintyOutput,
    du_dr: torch.Tensor,
    du_deps: torch.Tensor | None,
    tau: torch.Tensor,
    atom_weight: torch.Tensor,
    batch: torch.Tensor,
    tau_stress: torch.Tensor | None = None,
) -> BiasTerms:
    """Combine the unbiased prediction with the bias (see the module equations).

    Args:
        out: unbiased prediction with ``forces`` (N, 3) and, for stress, ``stress`` (S, 3, 3).
        du_dr: (N, 3) dU/dr, eV/A.  du_deps: (S, 3, 3) (1/V) dU/d(eps), eV/A^3, or None.
        tau: (S,) strength.  atom_weight: (N,) w_i.  batch: (N,) structure of each atom.
        tau_stress: (S,) tau_sigma of the bias stress; None: tau.
    """
    n_structures = out.energy.shape[0]
    w_s = structure_mean(atom_weight, batch, n_structures)
    counts = torch.bincount(batch, minlength=n_structures).to(out.energy.dtype)
    u = out.energy_uncertainty
    bias_energy = -tau * w_s * u
    bias_forces = (tau[batch] * atom_weight)[:, None] * du_dr
    node_energy = out.node_energy - (tau * u / counts)[batch] * atom_weight
    tau_stress = None if du_deps is None else (tau if tau_stress is None else tau_stress)
    bias_stress = None if du_deps is None else -(tau_stress * w_s)[:, None, None] * du_deps
    return BiasTerms(
        energy=out.energy + bias_energy,
        node_energy=node_energy,
        forces=out.forces + bias_forces,
        stress=None if bias_stress is None else out.stress + bias_stress,
        bias_energy=bias_energy,
        bias_forces=bias_forces,
        bias_stress=bias_stress,
        bias_strength=tau,
        bias_stress_strength=tau_stress,
    )


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
            results[keys.BIAS_STRESS_STRENGTH] = terms.bias_stress_strength
    return results
