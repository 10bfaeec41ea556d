"""Does plain MD with a trained model stay physical? (HAL, van der Oord et al. 2023, Fig. 8.)

``survival(model_file, start, temperatures, runs, steps)`` runs ``runs`` plain Langevin MD
trajectories per temperature (no bias, no uncertainty: the model's own forces) from ``start``
and counts those that blow up. All trajectories advance together as one batch (one model call
per step for all of them), with the BAOAB Langevin splitting (time step dt, friction gamma):

    v += dt/2 F/m;  x += dt/2 v;  v = c v + sqrt((1 - c^2) kT/m) xi;  x += dt/2 v;
    F = F(x);  v += dt/2 F/m,      c = exp(-gamma dt), xi ~ N(0, 1)

(ASE units: A, eV, amu; dt = 0.5 fs, gamma = 0.01/fs). Run r at temperature T starts from
Maxwell-Boltzmann velocities seeded with (seed, T, r). Every ``check_every`` steps a run is
checked, and it has blown up (and is stopped) when

* a position or force is not finite, a force exceeds 50 eV/A or two atoms are closer than
  0.5 A (the thresholds of :class:`uq_bias.dynamics.WatchdogConfig`); or
* a bond of the start structure's graph is broken: atoms i, j bonded at the start (closer than
  1.2 times the sum of their covalent radii, :class:`uq_bias.bonds.BondGraph`) are now more
  than ``stretch`` (1.5) times that sum apart, e.g. a C-H bond stretched beyond 1.6 A.
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
    """(pairs (B, 2), r_i + r_j (B,) A): the covalent bonds of ``atoms``."""
    from uq_bias.bonds import BondGraph

    graph = BondGraph.of(atoms)
    return graph.pairs, graph.radii_sum


def blow_up(x: np.ndarray, f: np.ndarray, pairs, limits, stretch: float) -> str | None:
    """Why one run (positions x (N, 3) A, forces f (N, 3) eV/A) has blown up, or None."""
    if not (np.isfinite(x).all() and np.isfinite(f).all()):
        return "non-finite positions or forces"
    f_max = np.linalg.norm(f, axis=1).max()
    if f_max > 50.0:
        return f"max |F| = {f_max:.3g} eV/A > 50"
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(len(x), k=1)]
    if d.min() < 0.5:
        return f"atoms {d.min():.2f} A apart < 0.5"
    bond = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    worst = int(np.argmax(bond / limits))
    if bond[worst] > stretch * limits[worst]:
        i, j = pairs[worst]
        return f"bond {i}-{j} at {bond[worst]:.2f} A (> {stretch} x {limits[worst]:.2f})"
    return None


class BatchForces:
    """Forces (R, N, 3) eV/A of R copies of one molecule at positions (R, N, 3), one model call."""

    def __init__(self, model_file: str, start: Atoms):
        from uq_bias.models import load_model

        self.model = load_model(model_file)
        self.start = start

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        from uq_bias.models import energy_gradients

        frames = []
        for x in positions:
            atoms = self.start.copy()
            atoms.positions = x
            frames.append(atoms)
        graph = self.model.graph(frames).requires_grad_(positions=True, strain=False)
        forces, _ = energy_gradients(self.model(graph).energy, graph)
        return forces.detach().cpu().double().numpy().reshape(positions.shape)


def survival(
    model_file: str,
    start: Atoms,
    temperatures=(300.0, 600.0),
    runs: int = 8,
    steps: int = 4000,
    *,
    seed: int = 0,
    check_every: int = 10,
    stretch: float = 1.5,
    timestep: float = 0.5,
    friction: float = 0.01,
) -> list[Survival]:
    """Run the trajectories of the module docstring; one :class:`Survival` per temperature."""
    forces_of = BatchForces(model_file, start)
    pairs, limits = start_bonds(start)
    temps = np.repeat(np.asarray(temperatures, dtype=float), runs)  # (R,)
    mass = start.get_masses()[None, :, None]  # (1, N, 1) amu
    kt = (units.kB * temps)[:, None, None]  # (R, 1, 1) eV
    dt, c = timestep * units.fs, np.exp(-friction * timestep)
    rng = np.random.default_rng([seed, 1])
    x = np.repeat(start.positions[None], len(temps), axis=0)
    v = np.stack(
        [
            np.random.default_rng([seed, int(t), r % runs]).normal(size=start.positions.shape)
            for r, t in enumerate(temps)
        ]
    ) * np.sqrt(kt / mass)
    v -= (mass * v).sum(axis=1, keepdims=True) / mass.sum()  # no centre-of-mass drift
    alive = np.ones(len(temps), dtype=bool)
    results = {t: Survival(t, runs, steps) for t in temperatures}
    f = forces_of(x)
    for step in range(1, steps + 1):
        a = alive
        v[a] += 0.5 * dt * f[a] / mass
        x[a] += 0.5 * dt * v[a]
        noise = rng.normal(size=v[a].shape)
        v[a] = c * v[a] + np.sqrt((1 - c**2) * kt[a] / mass) * noise
        x[a] += 0.5 * dt * v[a]
        f[a] = _forces(forces_of, x, a, step, results, temps, runs)
        v[a] += 0.5 * dt * f[a] / mass
        if step % check_every and step != steps:
            continue
        for r in np.flatnonzero(alive):
            reason = blow_up(x[r], f[r], pairs, limits, stretch)
            if reason:
                alive[r] = False
                results[temps[r]].failures.append((int(r % runs), step, reason))
        if not alive.any():
            break
    return [results[t] for t in temperatures]


def _forces(forces_of, x, alive, step, results, temps, runs) -> np.ndarray:
    """Forces of the alive runs; a run whose positions are not finite, or that makes the model
    raise, is marked failed (``alive`` updated in place) and gets zero forces."""
    index = np.flatnonzero(alive)
    try:
        if np.isfinite(x[index]).all():
            return forces_of(x[index])
    except (RuntimeError, ValueError):
        pass
    out = np.zeros_like(x[index])
    for k, r in enumerate(index):
        try:
            if not np.isfinite(x[r]).all():
                raise ValueError("non-finite positions")
            out[k] = forces_of(x[r : r + 1])[0]
        except (RuntimeError, ValueError) as err:
            alive[r] = False
            results[temps[r]].failures.append((int(r % runs), step, f"{type(err).__name__}: {err}"))
    return out
