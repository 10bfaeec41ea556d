"""Torsional projection of the bias force (``BiasConfig(project="torsions")``, molecules only).

dU/dr is replaced by its part that keeps every bond length and bond angle
(:func:`uq_bias.bonds.project_rigid`, with the bonds of the configuration itself): the
component orthogonal to the span of the gradients of all rigid pair distances (bonded pairs and
pairs two bonds apart). The uncertainty of a model trained near one conformation grows fastest
along stiff bond and angle coordinates, so the plain gradient mostly shakes bonds, which the
walker then pays for in energy; what it should explore, the conformations, lies along the
dihedrals. The projected bias is no gradient of any energy (like unequal weights) and needs
``split=True``; tau_rel then sets the projected bias force against the full physical force, so a
smaller tau_rel (0.1) does the same work.

Symbols to names: dU/dr ``du_dr`` (N, 3) eV/A, the projected gradient the returned (N, 3).
"""

from __future__ import annotations

import torch
from ase import Atoms

from uq_bias.bonds import BondGraph, project_rigid
from uq_bias.graph import Graph


def project_torsions(du_dr: torch.Tensor, graph: Graph) -> torch.Tensor:
    """(N, 3) the part of ``du_dr`` of each structure of ``graph`` that keeps its bonds and
    bond angles (float64). ValueError for a periodic structure (no fixed bond graph)."""
    if bool(graph.pbc.any()):
        raise ValueError(
            "BiasConfig(project='torsions') is for molecules: the structure is periodic, "
            "where bonds have no fixed graph; use project='none'"
        )
    out = du_dr.clone()
    numbers = graph.atomic_numbers.cpu().numpy()
    for s in range(graph.n_structures):
        index = torch.nonzero(graph.batch == s).flatten()
        x = graph.positions.detach()[index].to(torch.float64)
        atoms = Atoms(numbers[index.cpu().numpy()], x.cpu().numpy())
        pairs = torch.as_tensor(BondGraph.of(atoms).rigid_pairs(), device=x.device)
        out[index] = project_rigid(du_dr[index].detach(), x, pairs)
    return out
