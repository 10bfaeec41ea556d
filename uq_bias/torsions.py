"""Backbone torsions of a molecule, found from its covalent bond graph (:mod:`uq_bias.bonds`).

A bond j-k is a *backbone rotor* when all of these hold:

* j and k are heavy atoms (not H);
* each has at least one heavy neighbour besides the other (so methyl, hydroxyl, amino and other
  terminal rotors, which only spin hydrogens, and bonds to a terminal heavy atom are left out);
* the bond is in no ring (removing it leaves j and k disconnected);
* it is a single bond as far as the graph can tell: not both ends unsaturated by their
  neighbour count (C with fewer than 4 neighbours, N fewer than 3, O fewer than 2: a double or
  triple bond, or a bond inside a conjugated chain), no end a linear sp carbon (2 neighbours:
  the dihedral through an alkyne is undefined), and not an amide or ester C-N / C-O (C bonded to
  a terminal O: the partial double bond of a peptide's omega).

This is RDKit's strict rotatable-bond count (``CalcNumRotatableBonds(strict=True)`` on the
molecule without hydrogens: single, not in a ring, no terminal atom, no triple bond, no amide or
ester C-X) read from geometry instead of bond orders; it differs where only bond orders tell,
e.g. a single bond between two conjugated sp2 atoms (biphenyl's central bond) is not counted.

Each rotor j-k gives the dihedral (i, j, k, l), with i the heavy neighbour of j other than k that
has the most heavy neighbours (the one further along the backbone; lowest index on ties), and l
likewise for k. Alanine dipeptide CC(=O)NC(C)C(=O)NC gives phi (C-N-CA-C') and psi
(N-CA-C'-N'); butane 1; PEG CH3O(CH2CH2O)4CH3 12; cyclohexane 0.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from uq_bias.bonds import BondGraph

#: Neighbour count of a saturated atom, by atomic number (C, N, O, S, Si, P); other heavy atoms
#: count as saturated.
SATURATED = {6: 4, 7: 3, 8: 2, 14: 4, 16: 2}


def _neighbours(graph: BondGraph) -> list[set[int]]:
    around: list[set[int]] = [set() for _ in range(graph.n_atoms)]
    for i, j in graph.pairs.tolist():
        around[i].add(j)
        around[j].add(i)
    return around


def _in_ring(around: list[set[int]], j: int, k: int) -> bool:
    """Whether k can be reached from j without the bond j-k."""
    seen, todo = {j}, [j]
    while todo:
        a = todo.pop()
        for b in around[a]:
            if (a, b) in ((j, k), (k, j)) or b in seen:
                continue
            if b == k:
                return True
            seen.add(b)
            todo.append(b)
    return False


def rotatable_bonds(atoms: Atoms, graph: BondGraph | None = None) -> list[tuple[int, int]]:
    """The backbone rotors (j, k), j < k, of ``atoms`` (see the module docstring); ``graph``:
    its bond graph if already built. [] for a periodic structure (no fixed graph)."""
    if atoms.pbc.any():
        return []
    graph = BondGraph.of(atoms) if graph is None else graph
    z = atoms.numbers
    around = _neighbours(graph)

    def unsaturated(a: int) -> bool:
        return len(around[a]) < SATURATED.get(int(z[a]), 0)

    def linear(a: int) -> bool:
        return z[a] == 6 and len(around[a]) == 2

    def carbonyl_c(a: int) -> bool:
        return z[a] == 6 and any(z[o] == 8 and len(around[o]) == 1 for o in around[a])

    found = []
    for j, k in graph.pairs.tolist():
        if z[j] == 1 or z[k] == 1:
            continue
        if not all(any(z[n] != 1 and n != b for n in around[a]) for a, b in ((j, k), (k, j))):
            continue
        if (unsaturated(j) and unsaturated(k)) or linear(j) or linear(k):
            continue
        pair = {int(z[j]), int(z[k])}
        amide = pair in ({6, 7}, {6, 8}) and any(carbonyl_c(a) for a in (j, k) if z[a] == 6)
        if amide or _in_ring(around, j, k):
            continue
        found.append((min(j, k), max(j, k)))
    return sorted(found)


def backbone_torsions(atoms: Atoms) -> list[tuple[int, int, int, int]]:
    """(i, j, k, l) of every backbone rotor j-k of ``atoms``, in the order of
    :func:`rotatable_bonds` (see the module docstring for i and l)."""
    graph = BondGraph.of(atoms) if not atoms.pbc.any() else None
    if graph is None:
        return []
    z = atoms.numbers
    around = _neighbours(graph)

    def heavy_degree(a: int) -> int:
        return sum(z[n] != 1 for n in around[a])

    def outer(a: int, b: int) -> int:
        heavy = [n for n in sorted(around[a]) if z[n] != 1 and n != b]
        return int(max(heavy, key=lambda n: (heavy_degree(n), -n)))

    return [(outer(j, k), j, k, outer(k, j)) for j, k in rotatable_bonds(atoms, graph)]


def has_rotatable_bond(atoms: Atoms, graph: BondGraph | None = None) -> bool:
    """Whether ``atoms`` (a molecule) has a backbone rotor; False for a periodic structure."""
    return bool(rotatable_bonds(atoms, graph))


def dihedrals(atoms: Atoms, quads) -> np.ndarray:
    """(T,) the dihedral angles of ``quads`` in ``atoms``, degrees in (-180, 180]."""
    out = np.array([atoms.get_dihedral(*q) for q in quads], dtype=np.float64)
    return np.where(out > 180.0, out - 360.0, out)
