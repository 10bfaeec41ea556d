"""Covalent bond graph of a structure, and whether a later frame still has it.

Atoms i and j are bonded when

    d_ij < factor * (r_i + r_j)

with r the covalent radii of :data:`ase.data.covalent_radii` and ``factor`` = 1.2 (the usual
tolerance: a C-H bond of 1.09 A is over the bare sum 1.07 A). A frame keeps the graph of a
reference structure when every bond of it is at most ``stretch`` (1.5) times r_i + r_j long
(C-H 1.6 A, C-C 2.3 A): beyond that the molecule has come apart, and quantities defined on its
atoms (dihedrals, distances) no longer describe a conformation of it.

Distances are minimum-image distances in a periodic cell. Pairs come from the vesin neighbour
list.

Torsional projection (:func:`project_rigid`): the bond lengths and bond angles of a molecule
are fixed by its 1-2 pairs (the bonds) and 1-3 pairs (two atoms bonded to a common one),
d_p = |r_i - r_j|. A displacement v (N, 3) keeps them all, to first order, when B v = 0 with
B the (P, 3N) Jacobian of the pair distances,

    B[p, i] = e_p,  B[p, j] = -e_p,   e_p = (r_i - r_j) / |r_i - r_j|.

Its projection onto that null space (motion along dihedrals and of the whole molecule) is

    P v = v - B^T c,   c = argmin |B^T c - v|   (least squares: B has redundant rows)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.data import covalent_radii

#: Bond detection tolerance on the sum of covalent radii.
BOND_FACTOR = 1.2
#: A bond longer than this times the sum of covalent radii is broken.
BREAK_STRETCH = 1.5


@dataclass(frozen=True)
class BondGraph:
    """Bonds of a reference structure.

    Attributes:
        pairs: (B, 2) atom indices i < j.
        radii_sum: (B,) r_i + r_j, A.
        n_atoms: atoms of the reference structure.
    """

    pairs: np.ndarray
    radii_sum: np.ndarray
    n_atoms: int

    @classmethod
    def of(cls, atoms: Atoms, factor: float = BOND_FACTOR) -> BondGraph:
        """The bonds of ``atoms``: pairs closer than ``factor`` (r_i + r_j)."""
        if not factor > 0:
            raise ValueError(f"BondGraph.of: factor must be > 0, got {factor}")
        from vesin import NeighborList

        radii = covalent_radii[atoms.numbers]
        box = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
        i, j, d = NeighborList(cutoff=2 * factor * radii.max(), full_list=False).compute(
            points=atoms.positions, box=box, periodic=bool(atoms.pbc.any()), quantities="ijd"
        )
        keep = (d < factor * (radii[i] + radii[j])) & (i != j)
        pairs = np.unique(np.sort(np.stack([i[keep], j[keep]], axis=1), axis=1), axis=0)
        pairs = pairs.reshape(-1, 2).astype(np.int64)
        return cls(pairs, radii[pairs[:, 0]] + radii[pairs[:, 1]], len(atoms))

    def stretch(self, atoms: Atoms) -> np.ndarray:
        """(B,) each bond's length in ``atoms`` over r_i + r_j."""
        if len(atoms) != self.n_atoms:
            raise ValueError(
                f"BondGraph: the frame has {len(atoms)} atoms, the reference structure "
                f"{self.n_atoms}"
            )
        if not len(self.pairs):
            return np.zeros(0)
        i, j = self.pairs.T
        if atoms.pbc.any():
            d = np.array([atoms.get_distance(a, b, mic=True) for a, b in self.pairs])
        else:
            d = np.linalg.norm(atoms.positions[i] - atoms.positions[j], axis=1)
        return d / self.radii_sum

    def intact(self, frames: Sequence[Atoms], stretch: float = BREAK_STRETCH) -> np.ndarray:
        """(S,) whether each frame keeps every bond within ``stretch`` (r_i + r_j)."""
        return np.array([bool(np.all(self.stretch(a) <= stretch)) for a in frames], dtype=bool)

    def rigid_pairs(self) -> np.ndarray:
        """(P, 2) the 1-2 and 1-3 pairs (i < j): the distances that fix bond lengths and
        angles."""
        neighbours: dict[int, set[int]] = {}
        for i, j in self.pairs.tolist():
            neighbours.setdefault(i, set()).add(j)
            neighbours.setdefault(j, set()).add(i)
        pairs = {tuple(p) for p in self.pairs.tolist()}
        for around in neighbours.values():
            ends = sorted(around)
            pairs |= {(a, b) for k, a in enumerate(ends) for b in ends[k + 1 :]}
        return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def project_rigid(vectors: torch.Tensor, positions: torch.Tensor, pairs: torch.Tensor):
    """P v of the module docstring: ``vectors`` (N, 3) without their part that changes the
    distances of ``pairs`` (P, 2) at ``positions`` (N, 3) A. Returns (N, 3), same dtype."""
    if not len(pairs):
        return vectors
    n, (i, j) = len(positions), pairs.T
    e = positions[i] - positions[j]
    e = e / e.norm(dim=1, keepdim=True)
    rows = torch.arange(len(pairs), device=positions.device)
    jacobian = positions.new_zeros(len(pairs), n, 3)
    jacobian[rows, i] = e
    jacobian[rows, j] = -e
    jacobian = jacobian.reshape(len(pairs), 3 * n)
    v = vectors.reshape(3 * n, 1).to(jacobian)
    coef = torch.linalg.pinv(jacobian.T, rtol=1e-10) @ v
    return (v - jacobian.T @ coef).reshape(n, 3).to(vectors)
