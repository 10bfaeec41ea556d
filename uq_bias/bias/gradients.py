"""How the gradient of the uncertainty is obtained.

For an ensemble U = c std_k(E_k) with member forces, the closed form (free: the members' forces
are there anyway)

    dU/dr_i        = -U sum_k dE_k F_k,i / sum_k dE_k^2        (dE_k = E_k - mean_k E_k)
    (1/V) dU/deps  =  U sum_k dE_k sigma_k / sum_k dE_k^2

i.e. -cov_k(E_k, F_k) / std_k(E_k) times the calibration factor; for any other model (gradient
features) a backward pass of sum_S U(S) over the graph. With ``BiasConfig(split=False)`` neither
is needed on most steps: one backward pass over E_b gives F_b and sigma_b
(:mod:`uq_bias.bias.biased`).

Symbols to names: U ``uncertainty`` (S,) eV, dE_k ``delta`` (K, S), dU/dr ``du_dr`` (N, 3) eV/A,
(1/V) dU/deps ``du_deps`` (S, 3, 3) eV/A^3.
"""

from __future__ import annotations

import torch

from uq_bias.graph import Graph


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
