"""Batches of labelled frames for Lightning: dataset items are ``ase.Atoms``.

A :class:`Batch` is one :class:`~uq_bias.graph.Graph` plus the stacked labels (see
:mod:`uq_bias.training.labels` for how frames carry them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import lightning
import numpy as np
import torch
from ase import Atoms

from uq_bias.graph import Graph, atoms_to_graph
from uq_bias.training.labels import stress_matrix


@dataclass(frozen=True)
class Batch:
    """Labelled structures.

    Attributes:
        graph: the structures.
        energy: (n_structures,) reference energies, eV.
        forces: (n_atoms, 3) reference forces, eV/A.
        stress: (n_structures, 3, 3) reference stress, eV/A^3 (zeros where ``has_stress`` is False).
        has_stress: (n_structures,) bool, a stress label exists (periodic cells only).
    """

    graph: Graph
    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    has_stress: torch.Tensor

    @property
    def n_atoms(self) -> torch.Tensor:
        """(n_structures,) atoms per structure."""
        return self.graph.ptr[1:] - self.graph.ptr[:-1]

    def to(self, device=None, dtype: torch.dtype | None = None) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return replace(
            self,
            graph=self.graph.to(device, dtype),
            energy=move(self.energy),
            forces=move(self.forces),
            stress=move(self.stress),
            has_stress=move(self.has_stress),
        )


def collate(
    frames: Sequence[Atoms],
    cutoff: float,
    atomic_numbers: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float64,
) -> Batch:
    """One :class:`Batch` from labelled frames (their labels in ``atoms.calc.results``)."""
    graph = atoms_to_graph(frames, cutoff, atomic_numbers=atomic_numbers, dtype=dtype)
    results = [a.calc.results for a in frames]
    stress = np.zeros((len(frames), 3, 3))
    has_stress = np.zeros(len(frames), dtype=bool)
    for k, r in enumerate(results):
        if "stress" in r and frames[k].pbc.all():
            stress[k] = stress_matrix(r["stress"], f"structure {k}")
            has_stress[k] = True

    def tensor(array):
        return torch.as_tensor(np.asarray(array, dtype=float), dtype=dtype)

    return Batch(
        graph=graph,
        energy=tensor([r["energy"] for r in results]),
        forces=tensor(np.concatenate([r["forces"] for r in results])),
        stress=tensor(stress),
        has_stress=torch.as_tensor(has_stress),
    )


class _Collate:
    """Picklable collate function (DataLoader workers may pickle it)."""

    def __init__(self, cutoff: float, atomic_numbers: Sequence[int], dtype: torch.dtype):
        self.cutoff, self.atomic_numbers, self.dtype = cutoff, tuple(atomic_numbers), dtype

    def __call__(self, frames: list[Atoms]) -> Batch:
        return collate(frames, self.cutoff, self.atomic_numbers, self.dtype)


class AtomsDataModule(lightning.LightningDataModule):
    """Training and validation frames (labelled ``ase.Atoms``) batched into :class:`Batch`.

    Args:
        train: labelled training frames.
        valid: labelled validation frames.
        cutoff: neighbour-list cutoff, A (the model's).
        atomic_numbers: the model's elements.
        batch_size: structures per batch.
        dtype: floating-point dtype of the tensors (the model's).
        seed: seeds the shuffling of the training frames.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        train: Sequence[Atoms],
        valid: Sequence[Atoms],
        cutoff: float,
        atomic_numbers: Sequence[int],
        *,
        batch_size: int = 4,
        valid_batch_size: int | None = None,
        dtype: torch.dtype = torch.float64,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if not train or not valid:
            raise ValueError(
                f"need training and validation frames, got {len(train)} and {len(valid)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.train_frames, self.valid_frames = list(train), list(valid)
        self.batch_size = batch_size
        self.valid_batch_size = valid_batch_size or batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.collate = _Collate(cutoff, atomic_numbers, dtype)

    def transfer_batch_to_device(self, batch: Batch, device, dataloader_idx: int) -> Batch:
        return batch.to(device)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.train_frames,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=self.collate,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """Validation frames in order; under DDP each rank takes every world_size-th frame,
        without the repeated frames of a padding ``DistributedSampler`` (which would count
        some frames twice in the epoch metrics)."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        sampler = ShardSampler(len(self.valid_frames)) if distributed else None
        return torch.utils.data.DataLoader(
            self.valid_frames,
            batch_size=self.valid_batch_size,
            shuffle=False,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )


class ShardSampler(torch.utils.data.DistributedSampler):
    """Indices rank, rank + W, rank + 2W, ... of n items (W ranks): every item exactly once over
    all ranks, no padding (a DistributedSampler subclass, so Lightning keeps it). With fewer
    items than ranks every rank takes all n (Lightning refuses a rank with none): the epoch
    metrics, ratios of sums reduced over the ranks, are the same as with each item once."""

    def __init__(self, n: int):
        super().__init__(range(n), shuffle=False)
        self.n = n

    def _indices(self) -> range:
        if self.n < self.num_replicas:
            return range(self.n)
        return range(self.rank, self.n, self.num_replicas)

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())
