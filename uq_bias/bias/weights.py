"""Per-element weights of the bias force.

    w_i = w_{Z_i}                 atom weight (default 1 for every element)
    w_S = mean_{i in S} w_i       structure weight

The bias force on atom i is scaled by w_i and the bias energy and stress of structure S by w_S.
With all weights equal the biased forces and stress are exactly minus the gradient of the
biased energy; with unequal weights the bias force is *not* the gradient of any energy: an
element with weight 0 feels no bias at all, at the price of exact energy conservation of the
biased dynamics.

Symbols to names: w_i ``atom_weight`` (N,), w_S ``structure_weight`` (S,).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from ase.data import atomic_numbers as symbol_to_number
from ase.data import chemical_symbols


def atomic_number(element: str | int) -> int:
    """Atomic number of a symbol or number; ValueError for an unknown element."""
    if isinstance(element, (int, np.integer)) and not isinstance(element, bool):
        if 1 <= int(element) < len(chemical_symbols):
            return int(element)
    elif isinstance(element, str) and element in symbol_to_number and element != "X":
        return symbol_to_number[element]
    raise ValueError(
        f"BiasConfig: unknown element {element!r} in weights; use a chemical symbol such as 'H' "
        "or an atomic number such as 1"
    )


def weight_table(
    weights: Mapping[str | int, float],
    atomic_numbers: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(119,) weight w_Z per atomic number: 1 by default, ``weights`` where given.

    Raises ValueError for an element the model does not know (``atomic_numbers``).
    """
    table = torch.ones(119, dtype=dtype, device=device)
    for element, weight in weights.items():
        z = atomic_number(element)
        if z not in atomic_numbers:
            raise ValueError(
                f"bias weights: element {chemical_symbols[z]!r} is not known to the model, which "
                f"knows {[chemical_symbols[k] for k in atomic_numbers]}"
            )
        table[z] = float(weight)
    return table


def structure_mean(values: torch.Tensor, batch: torch.Tensor, n_structures: int) -> torch.Tensor:
    """(S,) mean over each structure's atoms of ``values`` (N,); w_S for the atom weights."""
    total = values.new_zeros(n_structures).index_add(0, batch, values)
    count = values.new_zeros(n_structures).index_add(0, batch, torch.ones_like(values))
    return total / count
