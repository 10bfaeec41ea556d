"""The breathing of MIL-53(Al) as numbers a model gets right or wrong: the two pores' volumes and
the energy between them.

For a calculator, both pores are relaxed in positions and cell (ASE's ``FrechetCellFilter`` and
``BFGS`` to ``fmax`` eV/A) from the reference's own minima, and

    volume_lp, volume_np   cell volume of the large and the narrow pore          A^3 per 76 atoms
    delta_e                E(narrow pore) - E(large pore), both relaxed           eV per 76 atoms

The reference's minima are GFN1-xTB's: the large pore of ``recipes/structures`` and the narrow
pore that ``mil53_test_set.narrow_pore`` finds, made once and cached like a test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import mil53_test_set
from ase import Atoms

NAME = "mil53_pores"


@dataclass(frozen=True)
class PoresSpec:
    """The test set's narrow-pore search (``test_set``) and the relaxation's ``fmax`` (eV/A)."""

    test_set: mil53_test_set.TestSetSpec = mil53_test_set.TestSetSpec()
    fmax: float = 0.05


def make(spec: PoresSpec, say=print) -> list[Atoms]:
    """GFN1-xTB's large and narrow pore, relaxed, with their energies (the cached pair)."""
    lp = mil53_test_set.large_pore()
    np_ = mil53_test_set.narrow_pore(spec.test_set, lp)
    say(f"pores: narrow {np_.get_volume():.0f} A^3, large {lp.get_volume():.0f} A^3")
    return [mil53_test_set.labelled(lp, "lp"), mil53_test_set.labelled(np_, "np")]


def relaxed(atoms: Atoms, calc, fmax: float) -> Atoms:
    """``atoms`` relaxed in positions and cell by ``calc`` (at most 300 steps)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
    atoms.calc = calc
    BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=300)
    return atoms


def measured(lp: Atoms, np_: Atoms) -> dict[str, float]:
    """The module docstring's three numbers of a relaxed large and narrow pore (energies from
    their calculators)."""
    return {
        "volume_lp": lp.get_volume(),
        "volume_np": np_.get_volume(),
        "delta_e": np_.get_potential_energy() - lp.get_potential_energy(),
    }


def properties(calc, pores: list[Atoms], fmax: float = 0.05) -> dict[str, float]:
    """The three numbers for ``calc``; ``pores``: the reference's minima (:func:`make`)."""
    return measured(*(relaxed(a, calc, fmax) for a in pores))


def reference(pores: list[Atoms]) -> dict[str, float]:
    """The three numbers of GFN1-xTB, from its cached minima."""
    return measured(*pores)
