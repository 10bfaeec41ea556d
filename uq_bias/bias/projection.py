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

``project="auto"`` (the default) projects each structure that is a molecule (not periodic) with a
backbone rotor (:func:`uq_bias.torsions.rotatable_bonds`) and leaves the others' gradient whole:
a rigid or periodic structure has no dihedral to push along.

Symbols to names: dU/dr ``du_dr`` (N, 3) eV/A, the projected gradient the returned (N, 3).
"""

from __future__ import annotations

import torch
from ase import Atoms

from uq_bias.bonds import BondGraph, project_rigid
from uq_bias.graph import Graph
from uq_bias.torsions import has_rotatable_bond


def project_torsions(
    du_dr: torch.Tensor, graph: Graph, auto: bool = False
) -> tuple[torch.Tensor, list[bool]]:
    """(N, 3) the part of ``du_dr`` of each structure of ``graph`` that keeps its bonds and
    bond angles (float64), and (S,) whether each structure was projected. ``auto``: project
    only molecules with a backbone rotor (others keep their gradient); without it, ValueError
    for a periodic structure (no fixed bond graph)."""
    if bool(graph.pbc.any()) and not auto:
        raise ValueError(
            "BiasConfig(project='torsions') is for molecules: the structure is periodic, "
            "where bonds have no fixed graph; use project='none' or 'auto'"
        )
    out, done = du_dr.clone(), []
    numbers = graph.atomic_numbers.cpu().numpy()
    periodic = graph.pbc.any(dim=1).tolist()
    for s in range(graph.n_structures):
        if auto and periodic[s]:
            done.append(False)
            continue
        index = torch.nonzero(graph.batch == s).flatten()
        x = graph.positions.detach()[index].to(torch.float64)
        atoms = Atoms(numbers[index.cpu().numpy()], x.cpu().numpy())
        bonds = BondGraph.of(atoms)
        if auto and not has_rotatable_bond(atoms, bonds):
            done.append(False)
            continue
        pairs = torch.as_tensor(bonds.rigid_pairs(), device=x.device)
        out[index] = project_rigid(du_dr[index].detach(), x, pairs)
        done.append(True)
    return out, done


def projection_note(project: str, split: bool, structures) -> str:
    """One line that says where the bias is projected on torsions, for the campaign log:
    ``project`` and ``split`` of a :class:`~uq_bias.bias.BiasConfig`, ``structures`` the start
    structures (ase.Atoms)."""
    from uq_bias.torsions import rotatable_bonds

    if project == "none":
        return "bias: project none: the full uncertainty gradient"
    if project == "auto" and not split:
        return "bias: project auto is off with split: false (the full uncertainty gradient)"
    counts = [len(rotatable_bonds(a)) for a in structures]
    on = sum(c > 0 for c in counts)
    if project == "torsions":
        return f"bias: project torsions on {len(counts)} structure(s)"
    if not on:
        return (
            "bias: project auto: off (no start structure is a molecule with a rotatable bond); "
            "the full uncertainty gradient"
        )
    return (
        f"bias: project auto: on torsions for {on} of {len(counts)} start structure(s) "
        f"(rotatable bonds from the bond graph: {', '.join(map(str, counts))})"
    )
