"""Atoms to batched tensors: positions, cell, species, neighbour list and a strain for stress.

A batch of S structures with N atoms in total is one :class:`Graph`. Edges come from the
``vesin`` neighbour-list library; an edge (s -> r) has the vector

    d_sr = r_r - r_s + n_sr . C     (n_sr: integer cell shifts; C: cell, rows = lattice vectors)

Stress is obtained from a symmetric strain eps (one 3x3 per structure) applied as

    r' = r (I + eps),   C' = C (I + eps),

so that sigma = (1/V) dE/d(eps) at eps = 0 (ASE's sign convention, eV/A^3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols


@dataclass(frozen=True)
class Graph:
    """A batch of structures as tensors. Lengths in A.

    Attributes:
        positions: (n_atoms, 3) Cartesian positions, A.
        cell: (n_structures, 3, 3) cells, rows are lattice vectors, A (zeros for molecules).
        pbc: (n_structures, 3) periodic directions.
        atomic_numbers: (n_atoms,) int64.
        batch: (n_atoms,) int64 structure index of each atom.
        ptr: (n_structures + 1,) int64 offsets of each structure's atoms.
        edge_index: (2, n_edges) int64, row 0 the sender s, row 1 the receiver r.
        unit_shifts: (n_edges, 3) integer cell shifts n_sr (in the positions' dtype).
        strain: (n_structures, 3, 3) symmetric strain, zeros; differentiate through it for stress.
        cutoff: neighbour-list cutoff, A.
    """

    positions: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    atomic_numbers: torch.Tensor
    batch: torch.Tensor
    ptr: torch.Tensor
    edge_index: torch.Tensor
    unit_shifts: torch.Tensor
    strain: torch.Tensor
    cutoff: float

    @property
    def n_structures(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def periodic(self) -> torch.Tensor:
        """(n_structures,) True where the structure is periodic in all three directions."""
        return self.pbc.all(dim=1)

    @property
    def volume(self) -> torch.Tensor:
        """(n_structures,) cell volumes, A^3 (0 for molecules)."""
        return torch.linalg.det(self.cell).abs()

    def per_volume(self, d_eps: torch.Tensor) -> torch.Tensor:
        """(..., S, 3, 3) dX/d(eps) -> (1/V) dX/d(eps) (X's unit per A^3, e.g. the stress
        sigma = (1/V) dE/d(eps) in eV/A^3); NaN for structures that are not periodic in all three
        directions (no volume, so no stress)."""
        periodic = self.periodic
        volume = torch.where(periodic, self.volume, torch.ones_like(self.volume))
        return torch.where(periodic[:, None, None], d_eps / volume[:, None, None], float("nan"))

    def requires_grad_(self, positions: bool = True, strain: bool = False) -> Graph:
        """A copy whose positions and/or strain are fresh leaves that require grad."""
        return replace(
            self,
            positions=self.positions.detach().requires_grad_(positions),
            strain=self.strain.detach().requires_grad_(strain),
        )

    def to(self, device=None, dtype: torch.dtype | None = None) -> Graph:
        """Move to a device; ``dtype`` applies to floating-point tensors only."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return replace(
            self,
            **{
                name: move(getattr(self, name))
                for name in (
                    "positions",
                    "cell",
                    "pbc",
                    "atomic_numbers",
                    "batch",
                    "ptr",
                    "edge_index",
                    "unit_shifts",
                    "strain",
                )
            },
        )


def strained(graph: Graph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the graph's strain: returns (positions', cell', shifts') with d = r_r - r_s + shift.

    positions' = r (I + eps[batch]), cell' = C (I + eps), shifts' = n_sr . C'[batch[s]]  (A).
    """
    eye = torch.eye(3, dtype=graph.positions.dtype, device=graph.positions.device)
    sym = 0.5 * (graph.strain + graph.strain.transpose(1, 2))
    deform = eye + sym
    positions = torch.einsum("ni,nij->nj", graph.positions, deform[graph.batch])
    cell = torch.bmm(graph.cell, deform)
    sender = graph.edge_index[0]
    shifts = torch.einsum("ei,eij->ej", graph.unit_shifts, cell[graph.batch[sender]])
    return positions, cell, shifts


def edge_vectors(graph: Graph) -> torch.Tensor:
    """(n_edges, 3) edge vectors d_sr = r'_r - r'_s + shift'_sr under the graph's strain, A."""
    positions, _, shifts = strained(graph)
    sender, receiver = graph.edge_index
    return positions[receiver] - positions[sender] + shifts


def check_atoms(atoms: Atoms, where: str = "atoms", atomic_numbers: Sequence[int] | None = None):
    """Raise ValueError (naming ``where``) for an empty Atoms, non-finite positions or cell,
    or an element outside ``atomic_numbers``."""
    if not isinstance(atoms, Atoms):
        raise TypeError(f"{where}: expected ase.Atoms, got {type(atoms).__name__}")
    if len(atoms) == 0:
        raise ValueError(f"{where}: the Atoms object is empty (0 atoms); give at least one atom")
    positions = atoms.get_positions()
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise ValueError(
            f"{where}: non-finite (NaN or inf) positions for atom(s) {bad[:10].tolist()}"
        )
    if not np.isfinite(atoms.cell.array).all():
        raise ValueError(f"{where}: the cell has non-finite entries: {atoms.cell.array.tolist()}")
    if atoms.pbc.any() and _rank(atoms.cell.array[atoms.pbc]) < int(atoms.pbc.sum()):
        raise ValueError(
            f"{where}: periodic in {atoms.pbc.tolist()} but the periodic cell vectors "
            f"{atoms.cell.array[atoms.pbc].tolist()} are not independent (zero, parallel or in "
            "one plane); give a cell with a volume > 0, or pbc False along the vacuum directions"
        )
    if atomic_numbers is not None:
        allowed = set(int(z) for z in atomic_numbers)
        unknown = sorted(set(atoms.numbers.tolist()) - allowed)
        if unknown:
            raise ValueError(
                f"{where}: element(s) {[chemical_symbols[z] for z in unknown]} are not known to "
                f"the model, which was trained on {[chemical_symbols[z] for z in sorted(allowed)]}"
            )


def check_frames(
    frames: Sequence[Atoms],
    what: str,
    atomic_numbers: Sequence[int] | None = None,
    *,
    contacts: bool = False,
):
    """:func:`check_atoms` (with ``contacts``, :func:`check_contacts` too) on each of
    ``frames`` read from one file, naming ``what`` (the file and its flag) and the frame's
    index in the file: for a check right after reading, before the frames are cut into batches
    whose errors would name the index in the batch."""
    for k, atoms in enumerate(frames):
        check_atoms(atoms, f"{what}, frame {k}", atomic_numbers)
        if contacts:
            check_contacts(atoms, f"{what}, frame {k}")


MIN_CONTACT = 0.3  # A; the shortest bond, H2, is 0.74 A


def check_contacts(atoms: Atoms, where: str = "atoms") -> None:
    """Raise ValueError (naming ``where`` and the atoms) if two atoms, or an atom and a periodic
    image, are closer than MIN_CONTACT: atoms given twice (a CIF whose symmetry copies were
    expanded again) or a cell in other units than the positions. ``atoms`` must pass
    :func:`check_atoms` (vesin needs finite positions and an invertible periodic cell)."""
    # vesin's cell list is slow for a tiny cutoff (cells of 0.3 A): search 1.5 A, then filter
    i, j, shifts = _neighbours(atoms, 1.5)
    vectors = atoms.positions[j] - atoms.positions[i] + shifts @ atoms.cell.array
    distances = np.linalg.norm(vectors, axis=1)
    if not (distances < MIN_CONTACT).any():
        return
    k = int(np.argmin(distances))
    a, b, image = int(i[k]), int(j[k]), bool(shifts[k].any())
    raise ValueError(
        f"{where}: atoms {a} ({atoms[a].symbol}) and {b} ({atoms[b].symbol}) are "
        f"{distances[k]:.3f} A apart{' across the cell boundary' if image else ''} "
        f"(less than {MIN_CONTACT} A; the shortest bond, H2, is 0.74 A): an atom given twice, or "
        "a cell in other units than the positions (nm against A)?"
    )


def _rank(vectors: np.ndarray) -> int:
    """Number of independent rows of ``vectors`` (A), relative to the longest; ASE's
    ``cell.rank`` counts non-zero rows, so three coplanar vectors had rank 3."""
    scale = float(np.abs(vectors).max()) if vectors.size else 0.0
    if scale == 0.0:
        return 0
    return int(np.linalg.matrix_rank(vectors / scale, tol=1e-8))


def _neighbours(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from vesin import NeighborList

    positions = atoms.get_positions()
    box = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    i, j, shifts = NeighborList(cutoff=cutoff, full_list=True).compute(
        points=positions, box=box, periodic=atoms.pbc.tolist(), quantities="ijS"
    )
    keep = ~((i == j) & (shifts == 0).all(axis=1))  # never an atom with itself
    return i[keep], j[keep], shifts[keep]


def atoms_to_graph(
    atoms: Atoms | Sequence[Atoms],
    cutoff: float,
    *,
    atomic_numbers: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Graph:
    """Batch one or several ``ase.Atoms`` into a :class:`Graph` with a neighbour list (cutoff in A).

    Raises ValueError for an empty list, an empty Atoms, non-finite positions, or an element
    outside ``atomic_numbers`` (when given). The input atoms are not modified.
    """
    frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    if not frames:
        raise ValueError("atoms_to_graph: got an empty list of structures")
    if not cutoff > 0:
        raise ValueError(f"atoms_to_graph: cutoff must be positive, got {cutoff}")
    positions, cells, pbcs, numbers, senders, receivers, shifts = [], [], [], [], [], [], []
    offset = 0
    counts = []
    for k, frame in enumerate(frames):
        check_atoms(frame, f"structure {k}", atomic_numbers)
        i, j, s = _neighbours(frame, cutoff)
        positions.append(frame.get_positions())
        cells.append(frame.cell.array if frame.pbc.any() else np.zeros((3, 3)))
        pbcs.append(frame.pbc.copy())
        numbers.append(frame.numbers)
        senders.append(i + offset)
        receivers.append(j + offset)
        shifts.append(s)
        counts.append(len(frame))
        offset += len(frame)

    def tensor(array, kind):
        return torch.as_tensor(np.ascontiguousarray(array), dtype=kind, device=device)

    counts_t = tensor(counts, torch.int64)
    n_structures = len(frames)
    return Graph(
        positions=tensor(np.concatenate(positions), dtype),
        cell=tensor(np.stack(cells), dtype),
        pbc=tensor(np.stack(pbcs), torch.bool),
        atomic_numbers=tensor(np.concatenate(numbers), torch.int64),
        batch=torch.repeat_interleave(torch.arange(n_structures, device=device), counts_t),
        ptr=torch.cat([counts_t.new_zeros(1), counts_t.cumsum(0)]),
        edge_index=tensor(
            np.stack([np.concatenate(senders), np.concatenate(receivers)]), torch.int64
        ),
        unit_shifts=tensor(np.concatenate(shifts), dtype),
        strain=torch.zeros((n_structures, 3, 3), dtype=dtype, device=device),
        cutoff=float(cutoff),
    )
