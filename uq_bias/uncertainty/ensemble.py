"""Deep ensembles: K independently trained models evaluated on one shared graph.

Equations (k = 1..K members, population statistics as in MACE's committee mode):

    E(S)        = mean_k E_k(S)                                   (eV)
    F_i         = mean_k F_{i,k},   F_{i,k} = -dE_k/dr_i           (eV/A)
    U(S)        = c_E * std_k E_k(S)                              (eV)
    U_i         = c_Z[Z_i] * sqrt( mean_xyz var_k F_{i,k} )       (eV/A)
    U_sigma(S)  = c_sigma * std_k sigma_k(S),   sigma_k = (1/V) dE_k/d(eps)   (eV/A^3, (3, 3))
    G_k(S)      = (E_k(S) - E(S)) / sqrt(K - 1)                   (selection features)

so that G G^T is the members' sample covariance of the energies. U(S) is a smooth function of the
members' energies and stays differentiable with respect to ``graph.positions`` and
``graph.strain`` (member forces are taken with ``retain_graph=True``).

Precision: everything above is computed in float64 whatever the members' dtype, and the spread
is formed where it is still exact. E_k(S) is the float64 sum of member k's per-atom energies
E_{i,k} (float64 from MACE, which adds the atomic reference energies in float64), never the
member's float32 total: at DFT-scale totals (-10^4 eV) float32 has a spacing of ~1 meV, as large
as the spread itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from ase import Atoms

from uq_bias import keys
from uq_bias.graph import Graph
from uq_bias.models import AtomisticModel, load_model
from uq_bias.models.base import used_gradient
from uq_bias.uncertainty.base import UncertaintyModel, UncertaintyOutput, structure_energy
from uq_bias.uncertainty.scales import CalibrationScales


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt(x) with a finite gradient at x = 0 (clamped at the dtype's smallest normal)."""
    return torch.sqrt(x.clamp_min(torch.finfo(x.dtype).tiny))


def member_std(values: torch.Tensor) -> torch.Tensor:
    """(K, ...) -> (...) population standard deviation over members, differentiable."""
    return safe_sqrt(values.var(dim=0, unbiased=False))


def atom_force_spread(forces: torch.Tensor) -> torch.Tensor:
    """(K, N, 3) member forces -> (N,) sqrt(mean_xyz var_k F_{i,k}), eV/A."""
    return safe_sqrt(forces.var(dim=0, unbiased=False).mean(dim=-1))


def member_gradients(
    energies: Sequence[torch.Tensor], graph: Graph, *, stress: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forces (K, N, 3) eV/A and stresses (K, S, 3, 3) eV/A^3 of each member, one backward each.

    ``energies`` holds the K members' (S,) energies as the members returned them: not rows of a
    stacked tensor, whose backward would send zeros through every other member's graph. The
    autograd graph is retained so that the caller can still differentiate functions of the
    energies. Non-periodic structures get a NaN stress. Results are float64.
    """
    inputs = [graph.positions] + ([graph.strain] if stress else [])
    forces, strains = [], []
    for energy in energies:
        grads = torch.autograd.grad(energy.sum(), inputs, retain_graph=True, allow_unused=True)
        forces.append(-used_gradient(grads[0], graph, "positions").to(torch.float64))
        if stress:
            strains.append(used_gradient(grads[1], graph, "strain").to(torch.float64))
    if not stress:
        return torch.stack(forces), None
    return torch.stack(forces), graph.per_volume(torch.stack(strains))


def _same_weights(a: AtomisticModel, b: AtomisticModel) -> bool:
    """Whether two adapters hold the same parameters, tensor for tensor."""
    pa, pb = list(a.parameters()), list(b.parameters())
    return len(pa) == len(pb) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(pa, pb)
    )


def check_members(members: Sequence[AtomisticModel]) -> None:
    """Raise ValueError unless the members differ in their weights and share elements, cutoff
    and dtype."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    first = members[0]
    for k, member in enumerate(members[1:], start=1):
        same = next((j for j in range(k) if _same_weights(members[j], member)), None)
        if same is not None:
            raise ValueError(
                f"ensemble members {same} and {k} have identical weights (one model given "
                "twice, one file twice, or members that training left at one start); copies have "
                "zero spread: give independently trained members"
            )
        if tuple(member.atomic_numbers) != tuple(first.atomic_numbers):
            raise ValueError(
                f"ensemble member {k} was trained for elements {list(member.atomic_numbers)} but "
                f"member 0 for {list(first.atomic_numbers)}; all members must know the same "
                "elements"
            )
        if abs(member.cutoff - first.cutoff) > 1e-12:
            raise ValueError(
                f"ensemble member {k} has cutoff {member.cutoff} A but member 0 has "
                f"{first.cutoff} A; members share one graph, so their cutoffs must be equal"
            )
        if member.dtype != first.dtype:
            raise ValueError(
                f"ensemble member {k} is {member.dtype} but member 0 is {first.dtype}; "
                "convert them to one dtype"
            )


def _energies(outs: Sequence, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, S) float64 member energies summed from the (K, N) float64 per-atom energies."""
    node = torch.stack([o.node_energy.to(torch.float64) for o in outs])
    return torch.stack([structure_energy(e, graph) for e in node]), node


class Ensemble(UncertaintyModel):
    """A deep ensemble of K adapter-wrapped models.

    Args:
        members: adapters, MACE modules or model files (trusted pickles), at least 2.
        head: head for multi-head MACE members.

    Calibrate with :func:`uq_bias.uncertainty.calibration.calibrate`; save with :meth:`save`.
    """

    def __init__(
        self,
        members: Sequence[AtomisticModel | torch.nn.Module | str],
        *,
        head: str | int | None = None,
    ):
        super().__init__()
        adapters = [
            m if isinstance(m, AtomisticModel) else load_model(m, head=head) for m in members
        ]
        check_members(adapters)
        self.wrapped_paths = [str(m) if isinstance(m, (str, Path)) else None for m in members]
        self.members = torch.nn.ModuleList(adapters)
        self.cutoff = float(adapters[0].cutoff)
        self.atomic_numbers = tuple(adapters[0].atomic_numbers)
        self.calibration = CalibrationScales(device=adapters[0].device)  # beside the members

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def graph(self, atoms: Atoms | Sequence[Atoms]) -> Graph:
        """One graph for all members (they share elements, cutoff, dtype and device)."""
        return self.members[0].graph(atoms)

    def member_outputs(self, graph: Graph) -> list:
        """Each member's :class:`~uq_bias.models.ModelOutput` on the shared graph."""
        return [member(graph) for member in self.members]

    def member_energies(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, S) energies and (K, N) per-atom energies of the members, eV, float64 (see the
        module doc: totals are float64 sums of the per-atom energies)."""
        return _energies(self.member_outputs(graph), graph)

    kind = "ensemble"
    computes_forces = True
    gives_stress_uncertainty = True

    def wrapped(self) -> list[AtomisticModel]:
        return list(self.members)

    @classmethod
    def rebuild(cls, models: list[AtomisticModel], options: dict) -> Ensemble:
        return cls(models, **options)

    def predict(self, graph: Graph, *, forces: bool, stress: bool) -> UncertaintyOutput:
        """Mean prediction, calibrated uncertainties and the members' values.

        Member forces are always computed (the per-atom uncertainty needs them), so ``forces``
        is always filled. If ``graph.positions`` does not require grad, a copy that does is
        used (then U(S) is not differentiable w.r.t. the caller's graph). ``stress=True`` needs
        ``graph.strain.requires_grad`` in that case too.
        """
        if not graph.positions.requires_grad or (stress and not graph.strain.requires_grad):
            graph = graph.requires_grad_(positions=True, strain=stress)
        with torch.enable_grad():
            outs = self.member_outputs(graph)
            member_forces, member_stress = member_gradients(
                [o.energy for o in outs], graph, stress=stress
            )
            energies, node_energies = _energies(outs, graph)
            energy_u = self.calibration.apply_energy(member_std(energies))
        atom_u = self.calibration.apply_atom(atom_force_spread(member_forces), graph.atomic_numbers)
        members = {
            keys.MEMBERS_ENERGY: energies,
            keys.MEMBERS_ENERGIES: node_energies,
            keys.MEMBERS_FORCES: member_forces,
        }
        out = UncertaintyOutput(
            energy=energies.mean(dim=0),
            node_energy=node_energies.mean(dim=0),
            energy_uncertainty=energy_u,
            atom_uncertainty=atom_u,
            forces=member_forces.mean(dim=0),
            members=members,
        )
        if stress:
            out.stress = member_stress.mean(dim=0)
            out.stress_uncertainty = self.calibration.apply_stress(member_std(member_stress))
            members[keys.MEMBERS_STRESS] = member_stress
        return out

    def selection_features(self, graph: Graph) -> torch.Tensor:
        """(S, K) G_k(S) = (E_k - mean_k E_k) / sqrt(K - 1), eV (uncalibrated), float64.

        Rank K - 1: greedy max-det on these picks at most K - 1 frames before filling up. For
        full batches select with ``labelled_frames=`` (the members' gradient features, see
        :mod:`uq_bias.uncertainty.conditioned`), as campaigns do."""
        energies, _ = self.member_energies(graph)
        centred = energies - energies.mean(dim=0, keepdim=True)
        return (centred / (self.n_members - 1) ** 0.5).T
