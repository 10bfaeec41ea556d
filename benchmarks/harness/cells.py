"""Reference-labelled frames of periodic cells, shared by the periodic test sets.

* :func:`labelled`: a bare copy of a frame with a reference calculator's energy (eV), forces
  (eV/A) and stress (eV/A^3, Voigt) attached as a ``SinglePointCalculator`` and its
  ``info["subset"]`` set;
* :func:`strained_cells`: a cell deformed by ``C' = C F`` (cell vectors as rows) for each
  isotropic linear strain s (``F = (1 + s) I``) and for a symmetric shear +-g in the first two
  directions (``F = I + g (e1 e2^T + e2 e1^T)``), fractional coordinates kept, then every atom
  displaced by a Gaussian of ``rattle`` A per component.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator


def labelled(atoms: Atoms, calc, subset: str) -> Atoms:
    """The module docstring's labelled copy of ``atoms`` (``calc`` computes it)."""
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
    frame.calc = calc
    results = {
        "energy": frame.get_potential_energy(),
        "forces": frame.get_forces(),
        "stress": frame.get_stress(),
    }
    frame.calc = SinglePointCalculator(frame, **results)
    frame.info["subset"] = subset
    return frame


def strained_cells(
    base: Atoms,
    strains: Sequence[float],
    shear: float,
    rattle: float,
    rng: np.random.Generator,
    label: Callable[[Atoms], Atoms],
) -> list[Atoms]:
    """The module docstring's strained and sheared cells of ``base``, rattled, each passed
    through ``label`` (in that order: strains, then +shear, then -shear)."""
    deformations = [np.eye(3) * (1.0 + s) for s in strains]
    for sign in (1.0, -1.0):
        deformation = np.eye(3)
        deformation[0, 1] = deformation[1, 0] = sign * shear
        deformations.append(deformation)
    frames = []
    for deformation in deformations:
        atoms = base.copy()
        atoms.set_cell(base.cell.array @ deformation, scale_atoms=True)
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        frames.append(label(atoms))
    return frames
