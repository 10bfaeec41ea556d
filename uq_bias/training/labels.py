"""Reference labels (energy, forces, stress) read from extended XYZ into a canonical form.

A labelled frame is an ``ase.Atoms`` whose ``calc`` is a ``SinglePointCalculator`` holding

    energy  float        eV
    forces  (n_atoms, 3) eV/A
    stress  (3, 3)       eV/A^3   (only for cells periodic in all three directions, optional)

Labels are found in ``atoms.info`` / ``atoms.arrays`` under configurable keys (for example
``REF_energy``) or in ``atoms.calc`` (what ``ase.io.read`` makes of ``energy=...`` columns).
Stress may be given in ASE's Voigt order (xx yy zz yz xz xy), as 9 numbers or as a 3x3 matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from uq_bias.graph import check_atoms
from uq_bias.io_structures import check_disjoint  # noqa: F401  (its home before; kept)
from uq_bias.options import option


@dataclass(frozen=True)
class LabelKeys:
    """Where the labels live in ``atoms.info`` (energy, stress) and ``atoms.arrays`` (forces)."""

    energy: str = option("energy", "Key of the reference energy in atoms.info (eV).")
    forces: str = option("forces", "Key of the reference forces in atoms.arrays (eV/A).")
    stress: str = option("stress", "Key of the reference stress in atoms.info (eV/A^3).")

    @classmethod
    def with_prefix(cls, prefix: str) -> LabelKeys:
        """Keys such as ``REF_energy``, ``REF_forces``, ``REF_stress`` for ``prefix='REF_'``."""
        return cls(f"{prefix}energy", f"{prefix}forces", f"{prefix}stress")


def stress_matrix(stress, where: str) -> np.ndarray:
    """A 3x3 stress (eV/A^3) from Voigt (6,) xx yy zz yz xz xy, 9 numbers, or 3x3."""
    s = np.asarray(stress, dtype=float)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.size == 9:
        return s.reshape(3, 3)
    raise ValueError(f"{where}: stress must have 6 (Voigt) or 9 entries, got shape {s.shape}")


def _lookup(atoms: Atoms, key: str, store: dict):
    if key in store:
        return store[key]
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    return results.get(key)


def labelled(atoms: Atoms, where: str, keys: LabelKeys = LabelKeys()) -> Atoms:
    """A copy of ``atoms`` with its labels in a SinglePointCalculator (see module docstring).

    Raises ValueError naming ``where`` when the energy or forces are missing or malformed.
    """
    check_atoms(atoms, where)
    energy = _lookup(atoms, keys.energy, atoms.info)
    forces = _lookup(atoms, keys.forces, atoms.arrays)
    if energy is None:
        raise ValueError(
            f"{where}: no energy label; expected atoms.info[{keys.energy!r}] or an energy in "
            "atoms.calc (name the key with --key-energy, or keys=LabelKeys(energy=...) in Python)"
        )
    if forces is None:
        raise ValueError(
            f"{where}: no forces label; expected atoms.arrays[{keys.forces!r}] or forces in "
            "atoms.calc (name the key with --key-forces, or keys=LabelKeys(forces=...) in Python)"
        )
    energy = _one_energy(energy, where, keys.energy)
    try:
        forces = np.asarray(forces, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: the forces {keys.forces!r} are not numbers ({err})") from err
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        raise ValueError(f"{where}: the energy or forces contain NaN or inf")
    results = {"energy": energy, "forces": forces}
    stress = _lookup(atoms, keys.stress, atoms.info)
    if stress is not None and atoms.pbc.all():
        matrix = stress_matrix(stress, where)
        if not np.isfinite(matrix).all():
            raise ValueError(f"{where}: the stress contains NaN or inf")
        results["stress"] = matrix
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update({k: v for k, v in atoms.info.items() if k not in vars(keys).values()})
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def read_frames(path: str | Path, keys: LabelKeys = LabelKeys()) -> list[Atoms]:
    """All frames of an extended-XYZ file, labelled (see :func:`labelled`).

    Raises FileNotFoundError for a missing file and ValueError naming the file and frame index for
    an unreadable file or a frame without energy or forces.
    """
    from uq_bias.io_structures import read_structures

    frames = read_structures(path, "data file")
    return [labelled(a, f"{path}, frame {k}", keys) for k, a in enumerate(frames)]


def elements(frames: Sequence[Atoms]) -> list[int]:
    """Sorted atomic numbers present in ``frames``."""
    return sorted(set(int(z) for a in frames for z in a.numbers))


def check_elements(frames: Sequence[Atoms], known: Sequence[int], what: str, against: str):
    """Raise ValueError if ``frames`` (called ``what``) contain elements outside ``known``."""
    extra = sorted(set(elements(frames)) - set(int(z) for z in known))
    if extra:
        raise ValueError(
            f"{what} contains element(s) {[chemical_symbols[z] for z in extra]} that are not in "
            f"{against} ({[chemical_symbols[z] for z in sorted(known)]})"
        )


def _one_energy(value, where: str, key: str) -> float:
    """The structure's total energy (eV) from a label value: one number, else ValueError (a
    per-atom column such as ASE's ``energies`` held one value per atom; element 0 was taken)."""
    try:
        values = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: the energy {key!r} is not a number: {value!r}") from err
    if values.size != 1:
        raise ValueError(
            f"{where}: the energy {key!r} holds {values.size} values; expected one total energy "
            "of the structure, eV (per-atom energies are not an energy label)"
        )
    return float(values[0])


def check_stress_found(frames: Sequence[Atoms], what: str) -> None:
    """ValueError if ``frames`` (called ``what``) are periodic in 3D, none has a stress label,
    and one keeps 6 or 9 numbers in ``atoms.info`` under a key naming stress or virial: the
    stress key did not match it, and training would silently drop stress."""
    periodic = [(k, a) for k, a in enumerate(frames) if a.pbc.all()]
    if not periodic or any("stress" in a.calc.results for _, a in periodic):
        return
    for k, atoms in periodic:
        key = next((key for key, v in atoms.info.items() if _stress_like(key, v)), None)
        if key is None:
            continue
        hint = (
            "; a virial (eV) is -stress * volume: convert it to stress (eV/A^3)"
            if "virial" in key.lower()
            else f" (--key-stress {key}, or keys=LabelKeys(stress={key!r}) in Python)"
        )
        raise ValueError(
            f"{what}: {len(periodic)} frames are periodic but none has a stress label, and "
            f"frame {k} has atoms.info[{key!r}]: name the stress key{hint}, or train without "
            "stress (--weights-stress 0; LossWeights(stress=0) in Python)"
        )


def _stress_like(key: str, value) -> bool:
    """A key naming stress or virial (not a weight) with 6 or 9 numbers."""
    name = key.lower()
    if not ("stress" in name or "virial" in name) or "weight" in name:
        return False
    try:
        return np.asarray(value, dtype=float).size in (6, 9)
    except (TypeError, ValueError):
        return False
