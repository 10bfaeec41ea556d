"""Per-element reference energies of a model fine-tuned on labels of another method.

A model trained on one reference (a foundation model on DFT) and fine-tuned on labels of
another (GFN2-xTB) starts with an energy error dominated by one offset per element,

    E_ref(S) - E_model(S) ~ sum_z n_z(S) c_z,

tens of eV per atom between DFT and xTB, which swamps the force term of the loss. MACE keeps
its isolated-atom energies E0_z in a buffer that no optimiser changes, so before fine-tuning the
offsets are fitted on the training frames by least squares,

    c = argmin_c sum_S (E_ref(S) - E_model(S) - sum_z n_z(S) c_z)^2

(the minimum-norm solution where the compositions do not determine every c_z: frames of one
composition fix only sum_z n_z c_z), and added to E0 of the model's head.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from uq_bias.models import AtomisticModel

_log = logging.getLogger(__name__)


def energy_offsets(model: AtomisticModel, frames: Sequence[Atoms], batch_size: int = 8):
    """{Z: c_Z} (eV) of the model's elements, fitted to the labelled ``frames`` (labels in
    ``atoms.calc``; see the module docstring). Elements absent from ``frames`` get 0."""
    numbers = list(model.atomic_numbers)
    counts = np.array([[np.sum(a.numbers == z) for z in numbers] for a in frames], dtype=float)
    labels = np.array([a.get_potential_energy() for a in frames], dtype=float)
    predicted = []
    with torch.no_grad():
        for start in range(0, len(frames), batch_size):
            graph = model.graph(list(frames[start : start + batch_size]))
            predicted.append(model(graph).energy.double().cpu().numpy())
    residual = labels - np.concatenate(predicted)
    offsets, _, rank, _ = np.linalg.lstsq(counts, residual, rcond=None)
    present = int(np.count_nonzero(counts.sum(axis=0)))
    if rank < present:
        _log.info(
            "fine-tuning: the training compositions fix %d combination(s) of %d elements' "
            "offsets; the split between them is the minimum-norm one, so structures of other "
            "compositions may start further off",
            rank,
            present,
        )
    return {z: float(c) for z, c in zip(numbers, offsets)}


def _e0(model: AtomisticModel) -> torch.Tensor | None:
    """MACE's isolated-atom energies buffer ((n_elements,) or (n_heads, n_elements)), or None."""
    inner = getattr(model, "model", None)
    e0 = getattr(getattr(inner, "atomic_energies_fn", None), "atomic_energies", None)
    return e0 if isinstance(e0, torch.Tensor) else None


def has_reference_energies(model: AtomisticModel) -> bool:
    """Whether :func:`shift_reference_energies` can change ``model`` (MACE models)."""
    return _e0(model) is not None


def shift_reference_energies(model: AtomisticModel, offsets: dict[int, float]) -> bool:
    """Add ``offsets`` (eV per element) to the isolated-atom energies of a MACE model's head, in
    place; False (nothing changed) for models that keep no such buffer."""
    e0 = _e0(model)
    if e0 is None:
        return False
    shift = torch.tensor([offsets.get(z, 0.0) for z in model.atomic_numbers], dtype=e0.dtype)
    with torch.no_grad():
        row = e0 if e0.dim() == 1 else e0[getattr(model, "head", 0)]
        row += shift.to(e0.device)
    return True
