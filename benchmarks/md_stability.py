"""Does plain MD with a trained model stay physical? Survival curves (HAL, van der Oord et al.
2023, Fig. 8).

``survival(model_file, start, temperatures, runs, steps)`` runs ``runs`` plain Langevin MD
trajectories per temperature from ``start`` with the model's own forces (no bias, no
uncertainty), all of one temperature as one batch of the package's batched engine
(:func:`uq_bias.dynamics.explore` with ``engine="batched"``: one model call per MD step for all
runs, 0.5 fs, friction 0.01/fs, Maxwell-Boltzmann start velocities from the seed sequence
(seed, temperature, run)). A run has failed at the first step at which the watchdog fires:

* its always-on blow-up checks: a position or force that is not finite, a force above 50 eV/A,
  two atoms closer than 0.5 A (:class:`uq_bias.dynamics.WatchdogConfig`); or
* a bond of the start structure's graph (atoms closer than 1.2 times the sum of their covalent
  radii at the start, :class:`uq_bias.bonds.BondGraph`) stretched beyond ``stretch`` (1.5)
  times that sum, e.g. a C-H bond beyond 1.6 A.

No energy stop and no close-contact ratio: those belong to exploration, not to the question
whether MD with the model survives. The survival curve S(t) is the share of runs that have not
failed by time t (a step function over the failure times; every run lasts ``steps``), and the
median time to failure is the first t with S(t) <= 1/2 (None when more than half survive: it
lies beyond the run length).

    python benchmarks/md_stability.py MODEL [MODEL ...] --start START.xyz [--runs 32]
        [--ps 10] [--temperatures 300 600 900] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

TIMESTEP_FS = 0.5


@dataclass
class Survival:
    """Outcome of the runs at one temperature.

    Attributes:
        temperature: K.  runs: trajectories run.  steps: MD steps each (``timestep`` fs).
        failures: (run, step, reason) of every run that failed.
        timestep: fs per step.
    """

    temperature: float
    runs: int
    steps: int
    failures: list[tuple[int, int, str]] = field(default_factory=list)
    timestep: float = TIMESTEP_FS

    @property
    def fraction(self) -> float:
        """Share of runs that lasted all ``steps``."""
        return 1.0 - len(self.failures) / self.runs

    def curve(self, times_ps: np.ndarray) -> np.ndarray:
        """S(t): the share of runs not failed by each time of ``times_ps`` (ps)."""
        failed_at = np.array([step for _, step, _ in self.failures], dtype=float)
        failed_at *= self.timestep / 1000.0
        times = np.asarray(times_ps, dtype=float)
        return 1.0 - (failed_at[None, :] <= times[:, None]).sum(axis=1) / self.runs

    @property
    def median_failure_ps(self) -> float | None:
        """The first time (ps) by which half the runs have failed; None if more than half
        survived the whole run."""
        steps = sorted(step for _, step, _ in self.failures)
        half = int(np.ceil(self.runs / 2))
        return None if len(steps) < half else steps[half - 1] * self.timestep / 1000.0


def watchdog(stretch: float):
    """The stability test's watchdog: blow-ups and broken bonds only."""
    from uq_bias.dynamics import WatchdogConfig

    return WatchdogConfig(
        min_distance_ratio=None,
        max_bond_stretch=stretch,
        min_volume_ratio=None,
        max_shear=None,
        max_energy_rise_kt=None,
        max_energy_drop_kt=None,
    )


def survival(
    model,
    start: Atoms,
    temperatures=(300.0, 600.0),
    runs: int = 32,
    steps: int = 4000,
    *,
    seed: int = 0,
    stretch: float = 1.5,
    friction: float = 0.01,
    device: str | None = None,
) -> list[Survival]:
    """Run the trajectories of the module docstring with ``model`` (a model file, or a model
    :class:`uq_bias.Calculator` takes); one :class:`Survival` per temperature."""
    from uq_bias import Calculator
    from uq_bias.dynamics import ExploreConfig, explore

    calculator = Calculator(model)
    outcomes = []
    for temperature in temperatures:
        config = ExploreConfig(
            steps=steps,
            timestep=TIMESTEP_FS,
            temperature=float(temperature),
            friction=friction,
            sample_every=steps,
            watchdog=watchdog(stretch),
            seed=int(seed * 100_000 + temperature),
            progress=False,
            engine="batched",
            device=device,
        )
        result = explore(calculator, start, config, walkers=runs)
        failures = [
            (w.index, w.stop_step, w.message or w.stop_reason)
            for w in result.walkers
            if w.stop_reason != "completed"
        ]
        outcomes.append(Survival(float(temperature), runs, steps, failures))
    return outcomes


def curve_table(rows: list[tuple[str, Survival]], points: int = 5) -> list[str]:
    """Markdown rows: S(t) at ``points`` times evenly up to the run length, and the median
    time to failure, one row per (name, :class:`Survival`) of ``rows``."""
    any_one = rows[0][1]
    length = any_one.steps * any_one.timestep / 1000.0
    times = np.linspace(length / points, length, points)
    head = " | ".join(f"S({t:g} ps)" for t in times)
    lines = [
        f"| model | T (K) | {head} | median failure (ps) |",
        "| --- | --- | " + "--- | " * points + "--- |",
    ]
    for name, s in rows:
        values = " | ".join(f"{v:.2f}" for v in s.curve(times))
        median = s.median_failure_ps
        median = f"> {length:g}" if median is None else f"{median:.2f}"
        lines.append(f"| {name} | {s.temperature:g} | {values} | {median} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="model files (MACE, NequIP or torch)")
    p.add_argument("--start", type=Path, required=True, help="start structure (ASE reads it)")
    p.add_argument("--runs", type=int, default=32, help="runs per model and temperature")
    p.add_argument("--ps", type=float, default=10.0, help="length of each run, ps")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0, 900.0])
    p.add_argument("--device", default=None, help="cpu, cuda, auto (default: the model's)")
    args = p.parse_args(argv)
    from ase.io import read

    start = read(args.start)
    steps = int(round(args.ps * 1000 / TIMESTEP_FS))
    temperatures, device = args.temperatures, args.device
    rows = [
        (str(model), s)
        for model in args.models
        for s in survival(str(model), start, temperatures, args.runs, steps, device=device)
    ]
    print("\n".join(curve_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
