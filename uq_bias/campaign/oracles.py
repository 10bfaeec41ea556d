"""Reference calculators ("oracles") that label frames with energy, forces and stress.

An :class:`OracleSpec` is a small picklable recipe (kind, import path, keyword arguments): a
worker process or a Dask worker builds the ASE calculator from it, so nothing unpicklable
travels. Labelling a frame gives either a labelled copy (a ``SinglePointCalculator`` with
energy in eV, forces in eV/A and, for cells periodic in all three directions, stress in
eV/A^3) or a :class:`Failure` with the reason: an exception of the calculator or a non-finite
value. A failure is recorded and the frame skipped; it is never added to the data.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from uq_bias.options import did_you_mean, option

Kind = Literal["gfn2-xtb", "gfn1-xtb", "emt", "import"]
KINDS = get_args(Kind)
_TBLITE = {"gfn2-xtb": "GFN2-xTB", "gfn1-xtb": "GFN1-xTB"}


@dataclass(frozen=True)
class Failure:
    """A frame the oracle could not label.

    Attributes:
        frame_id: the frame's id (``atoms.info["frame_id"]``), or its index if it has none.
        reason: what went wrong, e.g. ``"ValueError: SCF did not converge"``.
    """

    frame_id: str
    reason: str


@dataclass(frozen=True)
class OracleSpec:
    """The reference method that labels frames: how to build its ASE calculator.

    Args:
        kind: one of ``gfn2-xtb``, ``gfn1-xtb`` (tblite), ``emt`` (ASE) or ``import``.
        calculator: for ``import``: ``package.module:Class``, ``package.module.Class`` or
            ``/path/to/file.py:Class``; any ASE calculator class (or factory function).
        kwargs: keyword arguments of the calculator (for tblite e.g. ``charge``, ``multiplicity``,
            ``accuracy``).
    """

    kind: Kind = option(
        "emt", "gfn2-xtb / gfn1-xtb (tblite), emt (ASE), or import (any ASE calculator)."
    )
    calculator: str | None = option(
        None,
        "For kind=import: `package.module:Class`, `package.module.Class` or `/path/file.py:Class`.",
    )
    kwargs: dict[str, Any] = option({}, "Keyword arguments of the calculator's constructor.")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown oracle kind {self.kind!r}; choose one of {list(KINDS)}")
        if self.kind == "import" and not self.calculator:
            raise ValueError(
                "calculator is required with kind 'import': give 'package.module:Class' "
                "(an ASE calculator)"
            )

    def build(self):
        """A fresh ASE calculator."""
        if self.kind == "emt":
            from ase.calculators.emt import EMT

            return _checked(EMT(**self.kwargs), "emt")
        if self.kind in _TBLITE:
            try:
                from tblite.ase import TBLite
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "GFN-xTB labels need tblite: install it with `pip install uq_bias[xtb]`"
                ) from err
            kwargs = {"method": _TBLITE[self.kind], "verbosity": 0, **self.kwargs}
            return _checked(TBLite(**kwargs), self.kind)
        return import_object(self.calculator)(**self.kwargs)


def _checked(calculator, kind: str):
    """``calculator`` if every keyword it stored is one of its parameters. ASE calculators store
    any keyword (``TBLite(chrage=1)`` labels every frame at charge 0); the calculator's own
    aliases (tblite's ``alpb_solvation``) have become parameters by now."""
    known = sorted(type(calculator).default_parameters)
    for key in calculator.parameters:
        if key not in known:
            raise ValueError(
                f"oracle.kwargs.{key} is not a parameter of {kind}{did_you_mean(key, known)}; "
                f"its parameters: {', '.join(known)}"
            )
    return calculator


def import_object(path: str):
    """The object named by ``package.module:name``, ``package.module.name`` or ``file.py:name``."""
    if ":" in path:
        module_name, _, name = path.rpartition(":")
    else:
        module_name, _, name = path.rpartition(".")
    if not module_name or not name:
        raise ValueError(
            f"import path {path!r} must look like 'package.module:Class' or '/path/file.py:Class'"
        )
    if module_name.endswith(".py"):
        file = Path(module_name).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"import path {path!r}: no file {str(file)!r}")
        key = f"_uq_bias_user_{abs(hash(str(file.resolve())))}"
        module = sys.modules.get(key)
        if module is None:
            spec = importlib.util.spec_from_file_location(key, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(
                f"import path {path!r}: cannot import {module_name!r} ({err})"
            ) from err
    if not hasattr(module, name):
        raise ValueError(f"import path {path!r}: module {module_name!r} has no {name!r}")
    return getattr(module, name)


def _frame_name(atoms: Atoms, index: int) -> str:
    return str(atoms.info.get("frame_id", index))


def label_frame(spec: OracleSpec, atoms: Atoms, index: int = 0) -> Atoms | Failure:
    """Label one frame; returns a labelled copy or a :class:`Failure` (never raises for the
    calculator's own errors). Module level so that process pools and Dask can pickle it."""
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update(atoms.info)
    name = _frame_name(atoms, index)
    try:
        frame.calc = spec.build()
        results = {"energy": float(frame.get_potential_energy()), "forces": frame.get_forces()}
        if frame.pbc.all() and "stress" in frame.calc.implemented_properties:
            results["stress"] = _voigt(frame.calc.get_property("stress", frame))
    except Exception as err:  # the reference failed on this frame: record it, go on
        return Failure(name, f"{type(err).__name__}: {err}".strip())
    shapes = {"forces": (len(frame), 3), "stress": (6,)}
    wrong = [
        f"{k} of shape {np.shape(v)}, expected {shapes[k]}"
        for k, v in results.items()
        if k in shapes and np.shape(v) != shapes[k]
    ]
    if wrong:
        return Failure(name, f"the oracle returned {', '.join(wrong)}")
    bad = [k for k, v in results.items() if not np.isfinite(np.asarray(v, dtype=float)).all()]
    if bad:
        return Failure(name, f"non-finite {', '.join(bad)} from the oracle")
    frame.calc = SinglePointCalculator(frame, **{k: np.array(v) for k, v in results.items()})
    frame.calc.results["energy"] = results["energy"]
    return frame


def _voigt(stress) -> np.ndarray:
    """A calculator's stress as Voigt (6,), eV/A^3 (a 3x3 one converted; any other shape kept,
    for the shape check to name). Not ``Atoms.get_stress``, whose bare assert names nothing."""
    from ase.stress import full_3x3_to_voigt_6_stress

    stress = np.asarray(stress, dtype=float)
    return full_3x3_to_voigt_6_stress(stress) if stress.shape == (3, 3) else stress


class _Labeller:
    """``label_frame`` with the spec bound: a picklable one-argument function of (index, atoms)."""

    def __init__(self, spec: OracleSpec):
        self.spec = spec

    def __call__(self, item: tuple[int, Atoms]) -> Atoms | Failure:
        index, atoms = item
        return label_frame(self.spec, atoms, index)


class Oracle:
    """Labels frames with a reference calculator, in process or through an executor.

    Args:
        spec: the calculator recipe.
        executor: an :class:`~uq_bias.campaign.executors.Executor`; None labels in process.
    """

    def __init__(self, spec: OracleSpec, executor=None):
        self.spec = spec
        self.executor = executor

    def labeller(self) -> _Labeller:
        """The picklable function an executor maps over ``(index, atoms)`` pairs."""
        return _Labeller(self.spec)

    def label(self, frames: Sequence[Atoms]) -> tuple[list[Atoms], list[Failure]]:
        """Label ``frames``: (labelled frames in input order, failures with their reasons)."""
        items = list(enumerate(frames))
        if self.executor is None:
            results = [self.labeller()(item) for item in items]
        else:
            results = self.executor.map(self.labeller(), items)
        labelled = [r for r in results if isinstance(r, Atoms)]
        failures = [r for r in results if isinstance(r, Failure)]
        return labelled, failures
