"""Collective variables (CVs): named dihedrals and distances of a structure, for coverage maps.

A CV is declared by a :class:`CollectiveVariable` (in the campaign YAML as a list under
``report.cvs``)::

    report:
      cvs:
        - {name: phi, kind: dihedral, atoms: [4, 6, 8, 14]}
        - {name: d_OO, kind: distance, atoms: [5, 15], range: [2.0, 8.0]}

* ``dihedral``: the angle of four atoms in degrees, periodic with period 360 and box
  [-180, 180) unless ``period`` / ``range`` say otherwise;
* ``distance``: the distance of two atoms in A (minimum image in a periodic cell); not periodic,
  so its box ``range`` must be given.
* ``volume``: the cell's volume per atom V/N, A^3/atom (no atoms; periodic cells only); not
  periodic, so its box ``range`` must be given;
* ``shear``: how far the cell's shape is from a cube, dimensionless (no atoms; periodic cells
  only), from the Gram matrix G = C C^T of the cell vectors (rows of C):

      shear = (3/2) ||G - (tr G / 3) I||_F / tr G

  0 for a cube of any size, and ||dev(eps)||_F to first order for a cube strained by a small
  symmetric eps (C = a (I + eps)); unchanged by a rotation of the cell. Not periodic: give
  its ``range``.

Without declared CVs, peptides get their backbone phi and psi (:func:`backbone_cvs`), found from
the bond graph as in :mod:`uq_bias.campaign.systems`. Any molecule's backbone torsions (one
dihedral per rotatable bond between heavy atoms, :mod:`uq_bias.torsions`) are
:func:`torsion_cvs`; the coverage of more than two CVs is the mean over CV pairs
(:mod:`uq_bias.campaign.coverage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from uq_bias.options import option

#: CV kinds and the number of atoms each needs.
KINDS = {"dihedral": 4, "distance": 2, "volume": 0, "shear": 0}
#: CV kinds of the cell, not of atoms: periodic structures only.
CELL_KINDS = ("volume", "shear")


@dataclass(frozen=True)
class CollectiveVariable:
    """One collective variable (see the module docstring)."""

    name: str = option("", "Name of the CV in tables and plots.")
    kind: str = option(
        "dihedral",
        "dihedral (four atoms, degrees), distance (two atoms, A), volume (of the cell per atom, "
        "A^3/atom) or shear (of the cell, dimensionless; see uq_bias.campaign.cvs).",
    )
    atoms: list[int] = option([], "Atom indices, counted from 0.")
    period: float | None = option(
        None, "Period; null: 360 for a dihedral, not periodic for a distance.", unit="deg or A"
    )
    range: list[float] | None = option(
        None,
        "[low, high] of the coverage box; null: [-period/2, period/2) when periodic (required "
        "for a distance).",
        unit="deg or A",
    )

    @property
    def periodic(self) -> bool:
        return self.box_period is not None

    @property
    def box_period(self) -> float | None:
        if self.period is not None:
            return float(self.period)
        return 360.0 if self.kind == "dihedral" else None

    @property
    def box(self) -> tuple[float, float]:
        """(low, high) of the coverage box (high - low = period for a periodic CV)."""
        if self.range is not None:
            return float(self.range[0]), float(self.range[1])
        half = self.box_period / 2.0
        return -half, half

    def value(self, atoms: Atoms) -> float:
        """The CV of ``atoms``: degrees in (-180, 180] for a dihedral, A for a distance,
        A^3/atom for a volume, dimensionless for a shear."""
        if self.kind in CELL_KINDS:
            return cell_value(self.kind, atoms)
        if self.kind == "distance":
            return float(atoms.get_distance(*self.atoms, mic=bool(atoms.pbc.any())))
        angle = float(atoms.get_dihedral(*self.atoms, mic=bool(atoms.pbc.any())))
        return angle - 360.0 if angle > 180.0 else angle


def cell_value(kind: str, atoms: Atoms) -> float:
    """V/N (A^3/atom) or the shear of the module docstring of a periodic ``atoms``."""
    if not atoms.pbc.all():
        raise ValueError(
            f"a {kind} CV needs a cell periodic in all three directions, got pbc="
            f"{atoms.pbc.tolist()}; use dihedral or distance CVs for molecules"
        )
    if kind == "volume":
        return float(atoms.get_volume() / len(atoms))
    gram = atoms.cell.array @ atoms.cell.array.T
    trace = float(np.trace(gram))
    return float(1.5 * np.linalg.norm(gram - trace / 3.0 * np.eye(3)) / trace)


def check(cvs: Sequence[CollectiveVariable], n_atoms: int, where: str = "report.cvs") -> None:
    """Raise ValueError naming ``where[k]`` for a CV that cannot be computed on ``n_atoms``
    atoms: an unknown kind, the wrong number of atoms, an index out of range or repeated, a
    period <= 0, a range that is not [low, high] with low < high (of width = period when both
    are given), or a distance without a range."""
    names = [cv.name for cv in cvs]
    for k, cv in enumerate(cvs):
        at = f"{where}[{k}] ({cv.name or 'no name'})"
        if not cv.name:
            raise ValueError(f"{at}: give the CV a name")
        if names.count(cv.name) > 1:
            raise ValueError(f"{at}: the name {cv.name!r} is used twice; names must differ")
        if cv.kind not in KINDS:
            raise ValueError(f"{at}: unknown kind {cv.kind!r}; choose one of {list(KINDS)}")
        need = KINDS[cv.kind]
        if len(cv.atoms) != need:
            raise ValueError(
                f"{at}: a {cv.kind} needs {need} atom indices, got {len(cv.atoms)}: {cv.atoms}"
            )
        bad = [i for i in cv.atoms if not (isinstance(i, (int, np.integer)) and 0 <= i < n_atoms)]
        if bad:
            raise ValueError(
                f"{at}: atom indices {bad} out of range; the structures have {n_atoms} atoms "
                f"(indices 0 to {n_atoms - 1})"
            )
        if len(set(cv.atoms)) != need:
            raise ValueError(f"{at}: an atom index is repeated in {cv.atoms}")
        _check_box(cv, at)


def _check_box(cv: CollectiveVariable, at: str) -> None:
    if cv.period is not None and not (np.isfinite(cv.period) and cv.period > 0):
        raise ValueError(f"{at}: period must be a positive number, got {cv.period}")
    if cv.range is None:
        if not cv.periodic:
            raise ValueError(
                f"{at}: a non-periodic {cv.kind} needs range: [low, high] for its coverage box"
            )
        return
    if len(cv.range) != 2 or not cv.range[0] < cv.range[1]:
        raise ValueError(f"{at}: range must be [low, high] with low < high, got {cv.range}")
    width = cv.range[1] - cv.range[0]
    if cv.periodic and not np.isclose(width, cv.box_period):
        raise ValueError(
            f"{at}: range {cv.range} spans {width}, but a periodic CV's range must span its "
            f"period {cv.box_period}"
        )


def backbone_cvs(atoms: Atoms) -> list[CollectiveVariable]:
    """phi (C-N-CA-C') and psi (N-CA-C'-N') of a peptide's first residue; [] without one."""
    from uq_bias.campaign.systems import backbone

    quads = backbone(atoms)
    if quads is None:
        return []
    return [
        CollectiveVariable(name, "dihedral", [int(i) for i in quad])
        for name, quad in zip(("phi", "psi"), quads)
    ]


def torsion_cvs(atoms: Atoms) -> list[CollectiveVariable]:
    """One dihedral CV per backbone rotor of the molecule ``atoms``
    (:func:`uq_bias.torsions.backbone_torsions`), named ``t<j>-<k>`` after the bond's atoms;
    [] for a molecule without one or a periodic structure."""
    from uq_bias.torsions import backbone_torsions

    return [
        CollectiveVariable(f"t{j}-{k}", "dihedral", [int(i), int(j), int(k), int(m)])
        for i, j, k, m in backbone_torsions(atoms)
    ]


def values(frames: Sequence[Atoms], cvs: Sequence[CollectiveVariable]) -> np.ndarray:
    """(S, d) the CVs of every frame."""
    return np.array([[cv.value(a) for cv in cvs] for a in frames], dtype=np.float64).reshape(
        len(frames), len(cvs)
    )


def coverage_of(cv_values: np.ndarray, cvs: Sequence[CollectiveVariable]) -> float:
    """:func:`uq_bias.campaign.coverage.coverage` of (S, d) ``cv_values`` in the box of ``cvs``."""
    from uq_bias.campaign.coverage import coverage

    boxes = [cv.box for cv in cvs]
    low, high = [b[0] for b in boxes], [b[1] for b in boxes]
    return coverage(cv_values, low, high, [cv.periodic for cv in cvs])
