"""Does plain MD with a trained model stay physical? (HAL, van der Oord et al. 2023, Fig. 8.)

``survival(model_file, start, temperature, runs, steps)`` runs ``runs`` plain Langevin MD
trajectories (no bias, no uncertainty: the model's own forces; 0.5 fs, friction 0.01/fs, run r
seeded with (seed, r)) from ``start`` and counts those that blow up. Every ``check_every``
steps a run is checked, and it has blown up when

* the watchdog of :mod:`uq_bias.dynamics.watchdog` fires: a non-finite value, a force above
  ``max_force`` (50 eV/A) or two atoms closer than ``min_distance`` (0.5 A); or
* a bond of the start structure's graph is broken: atoms i, j bonded at the start (closer than
  the sum of ASE's natural cutoffs, i.e. covalent radii) are now more than ``stretch`` (1.5)
  times that sum apart, e.g. a C-H bond stretched beyond 1.6 A.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units


@dataclass
class Survival:
    """Outcome of the runs at one temperature.

    Attributes:
        temperature: K.  runs: trajectories run.  steps: MD steps each (0.5 fs).
        failures: (run, step, reason) of every run that blew up.
    """

    temperature: float
    runs: int
    steps: int
    failures: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return 1.0 - len(self.failures) / self.runs


def start_bonds(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (B, 2), limits (B,) A): bonded pairs of ``atoms`` and the sum of their radii."""
    from ase.neighborlist import natural_cutoffs

    radii = np.array(natural_cutoffs(atoms))
    d = atoms.get_all_distances()
    limit = radii[:, None] + radii[None, :]
    i, j = np.nonzero(np.triu(d < limit, k=1))
    return np.stack([i, j], axis=1), limit[i, j]


def broken_bond(atoms: Atoms, pairs, limits, stretch: float) -> str | None:
    d = np.linalg.norm(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], axis=1)
    worst = int(np.argmax(d / limits))
    if d[worst] > stretch * limits[worst]:
        i, j = pairs[worst]
        return f"bond {i}-{j} at {d[worst]:.2f} A (> {stretch} x {limits[worst]:.2f})"
    return None


def survival(
    model_file: str,
    start: Atoms,
    temperature: float,
    runs: int = 8,
    steps: int = 4000,
    *,
    seed: int = 0,
    check_every: int = 10,
    stretch: float = 1.5,
) -> Survival:
    """Run the trajectories of the module docstring and return their :class:`Survival`."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from uq_bias.calculator import Calculator
    from uq_bias.dynamics.watchdog import Watchdog, WatchdogConfig

    calculator = Calculator(model_file)
    watchdog = Watchdog(WatchdogConfig(min_distance=0.5, max_force=50.0))
    pairs, limits = start_bonds(start)
    result = Survival(temperature, runs, steps)
    for r in range(runs):
        rng = np.random.default_rng([seed, int(temperature), r])
        atoms = start.copy()
        atoms.calc = calculator
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        md = Langevin(
            atoms,
            0.5 * units.fs,
            temperature_K=temperature,
            friction=0.01 / units.fs,
            fixcm=False,
            rng=rng,
        )
        for step in range(check_every, steps + 1, check_every):
            try:
                md.run(check_every)
            except (ValueError, RuntimeError, FloatingPointError) as err:
                result.failures.append((r, step, f"{type(err).__name__}: {err}"))
                break
            verdict = watchdog(atoms, calculator.results)
            reason = verdict.message if verdict.reason else None
            reason = reason or broken_bond(atoms, pairs, limits, stretch)
            if reason:
                result.failures.append((r, step, reason))
                break
    return result
