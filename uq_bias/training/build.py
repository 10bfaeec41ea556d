"""Build a fresh ScaleShiftMACE from a size preset.

Presets (channels x max L of the hidden features, interactions, MLP width of the last readout):

======  ==================  ============  ===  =====
preset  hidden irreps       interactions  L    MLP
======  ==================  ============  ===  =====
tiny    8x0e + 8x1o         2             1    8
small   32x0e + 32x1o       2             2    16
medium  64x0e + 64x1o       2             3    16
======  ==================  ============  ===  =====
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from uq_bias.options import option

PRESETS: dict[str, dict] = {
    "tiny": {"hidden_irreps": "8x0e + 8x1o", "max_ell": 1, "mlp": "8x0e", "correlation": 2},
    "small": {"hidden_irreps": "32x0e + 32x1o", "max_ell": 2, "mlp": "16x0e", "correlation": 3},
    "medium": {"hidden_irreps": "64x0e + 64x1o", "max_ell": 3, "mlp": "16x0e", "correlation": 3},
}


@dataclass(frozen=True)
class ModelOptions:
    """A fresh MACE model: size, cutoff and floating-point type."""

    preset: Literal["tiny", "small", "medium"] = option("small", "Size of a fresh MACE model.")
    cutoff: float = option(5.0, "Neighbour cutoff radius of a fresh model.", unit="A")
    dtype: Literal["float64", "float32"] = option("float64", "Floating-point type of the model.")

    def __post_init__(self):
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be positive (A), got {self.cutoff}")


@dataclass(frozen=True)
class DataStatistics:
    """What a fresh model needs to know about its training data.

    Attributes:
        atomic_energies: energy of each isolated element, eV (from a least-squares fit).
        avg_num_neighbors: mean number of neighbours within the cutoff.
        scale: RMS of the force components, eV/A (the readout scale).
        shift: mean per-atom interaction energy, eV.
    """

    atomic_energies: Mapping[int, float]
    avg_num_neighbors: float
    scale: float
    shift: float


def build_mace(
    atomic_numbers: Sequence[int],
    *,
    cutoff: float = 5.0,
    preset: str = "tiny",
    statistics: DataStatistics | None = None,
    heads: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> torch.nn.Module:
    """A new ``mace.modules.ScaleShiftMACE`` for ``atomic_numbers`` with the given preset."""
    from uq_bias.models.mace import import_mace

    import_mace()
    from e3nn import o3
    from mace import modules

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    numbers = sorted(set(int(z) for z in atomic_numbers))
    if not numbers:
        raise ValueError("build_mace: no elements given")
    stats = statistics or DataStatistics({z: 0.0 for z in numbers}, 10.0, 1.0, 0.0)
    missing = [z for z in numbers if z not in stats.atomic_energies]
    if missing:
        raise ValueError(f"build_mace: no atomic energy for elements {missing}")
    spec = PRESETS[preset]
    n_heads = len(heads) if heads else 1
    energies = np.array([stats.atomic_energies[z] for z in numbers], dtype=float)
    torch.manual_seed(seed)
    model = modules.ScaleShiftMACE(
        r_max=float(cutoff),
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=spec["max_ell"],
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=len(numbers),
        hidden_irreps=o3.Irreps(spec["hidden_irreps"]),
        MLP_irreps=o3.Irreps(spec["mlp"]),
        atomic_energies=np.tile(energies, (n_heads, 1)) if heads else energies,
        avg_num_neighbors=float(stats.avg_num_neighbors),
        atomic_numbers=numbers,
        correlation=spec["correlation"],
        gate=torch.nn.functional.silu,
        heads=list(heads) if heads else None,
        atomic_inter_scale=[float(stats.scale)] * n_heads if heads else float(stats.scale),
        atomic_inter_shift=[float(stats.shift)] * n_heads if heads else float(stats.shift),
    )
    model = model.to(dtype)
    # mace stores these buffers in torch's default dtype (often float32): put back exact values
    with torch.no_grad():
        e0 = model.atomic_energies_fn.atomic_energies
        e0.copy_(torch.as_tensor(energies, dtype=dtype).expand_as(e0))
        scale_shift = model.scale_shift
        scale_shift.scale.fill_(float(stats.scale))
        scale_shift.shift.fill_(float(stats.shift))
    return model
