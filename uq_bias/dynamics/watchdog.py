"""The walker watchdog: stop exploration when the model is out of its depth or the MD blows up.

Checks, after every MD step, in this order (the first that fires gives the stop reason):

* ``non_finite``: a NaN or inf in positions, cell, energy, forces or stress;
* ``cell_volume``: a periodic cell's volume below ``min_volume_ratio`` or above
  ``max_volume_ratio`` times the walker's first cell's (NPT: the cell collapses, or the bias
  stress pulls it open);
* ``cell_shear``: a periodic cell sheared past ``max_shear`` from the walker's first cell:
  max_k |ln s_k - (1/3) sum_l ln s_l|, s_k the singular values of h0^-1 h (h0, h the first and
  the current cell, rows are cell vectors), the deviatoric part of the logarithmic (Hencky)
  strain, blind to rotations and to a change of volume;
* ``max_force``: max_i |F_i| > ``max_force`` (eV/A), F the *unbiased* forces (the model's own;
  with no bias, the forces the MD uses), so that a strong bias force is not taken for a blow-up;
* ``min_distance``: two atoms closer than ``min_distance`` (A), periodic images included;
* ``min_distance_ratio``: atoms i, j closer than ``min_distance_ratio`` (r_i + r_j), r the
  covalent radii of :data:`ase.data.covalent_radii` (a bond collapsing: C-H at 0.7 is 0.75 A);
* ``bond_stretch``: a bond of the walker's first frame (atoms closer than 1.2 (r_i + r_j))
  longer than ``max_bond_stretch`` (r_i + r_j): the molecule has come apart (a hot walker
  boiling off a hydrogen). Molecules only: a periodic first frame has no fixed graph, and the
  check is skipped;
* ``energy_rise``: the model's unbiased energy per atom more than the rise limit above the lowest
  the walker has seen: the walker has been pushed up the surface where no thermal trajectory at
  its temperature goes (the bias did the climbing);
* ``energy_drop``: the model's unbiased energy per atom more than the drop limit below the
  walker's first frame: a thermal trajectory started near equilibrium does not fall far below
  where it started, so the model has a spurious low (a hole) there, which the bias, rewarding
  uncertainty, steers into;
* ``uncertainty``: max_i u_i > ``max_uncertainty`` (eV/A), u_i the calibrated per-atom force
  uncertainty;
* ``hal``: max_i u_i / (|F_i| + eps) > ``max_hal_ratio`` (HAL's relative criterion, F_i the
  unbiased force, eps = ``hal_eps`` in eV/A).

Under NPT at pressure P0 both energy checks watch the enthalpy E + P0 V per atom instead of E.

The energy limits are in units the system sets (:meth:`WatchdogConfig.energy_limits`):

    rise limit = max_energy_rise_kt k_B T,   drop limit = max_energy_drop_kt k_B T   (eV/atom)

with T the walker's temperature; defaults 4 and 2, which at 300 K (k_B T = 0.02585 eV) are
0.103 and 0.052 eV/atom, the values chosen on alanine dipeptide. A harmonic molecule's potential
energy per atom sits 3/2 k_B T above its minimum on average, with a spread of
sqrt(3/(2N)) k_B T per atom: a thermal walker does not rise 4 k_B T/atom above its lowest, nor
fall 2 k_B T/atom below a start near equilibrium. ``max_energy_rise`` / ``max_energy_drop`` in
eV/atom (the spelling before 0.x) override them; at T = 0 the k_B T limits are off.

The first seven are blow-ups (the frame is broken and not kept); ``energy_rise`` and
``energy_drop`` frames are not kept either (labels that far up the true surface teach nothing
about the region the potential is used in); the last two mean the walker found what it was
looking for (the frame is kept as a candidate). ``bond_stretch``, ``energy_rise`` and
``energy_drop`` remember the walker's first frame, its energy and the lowest energy, the cell
checks its first cell: a :class:`Watchdog` follows one walker. The cell checks run before the
model sees a frame in the batched engine (:meth:`Watchdog.collapsed`), so that a collapsed cell
never builds a neighbour list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.units import kB as K_B

from uq_bias import keys
from uq_bias.options import option

BLOW_UPS = (
    "non_finite",
    "max_force",
    "min_distance",
    "min_distance_ratio",
    "bond_stretch",
    "cell_volume",
    "cell_shear",
    "error",
)
FOUND = ("uncertainty", "hal")
#: Stops after which a walker with restarts left starts again (``ExploreConfig.restarts``): the
#: blow-ups, the energy rise and the energy drop. Not an exception from the calculator
#: ("error"), which would come again; the others mean it completed or found what it looked for.
RESTARTABLE = (*(r for r in BLOW_UPS if r != "error"), "energy_rise", "energy_drop")
#: Stops after which a walk's last frames are no place to go on from (``start: last``): the
#: blow-ups (broken frames) and the energy drop (the fall into a spurious low of the model).
NO_CONTINUE = (*BLOW_UPS, "energy_drop")


@dataclass(frozen=True)
class WatchdogConfig:
    """Thresholds of the watchdog (null switches a check off)."""

    max_uncertainty: float | None = option(
        None,
        "Stop when the largest calibrated atom uncertainty max_i u_i exceeds this (conformal "
        "calibration: u_i bounds the norm of the atom's force error at 1 - alpha; likelihood: "
        "u_i is the standard deviation of each force component, about 2.5x smaller at "
        "alpha = 0.1).",
        unit="eV/A",
    )
    max_hal_ratio: float | None = option(
        None,
        "Stop when max_i u_i / (|F_i| + hal_eps) exceeds this (HAL's relative criterion, F the "
        "unbiased forces).",
    )
    hal_eps: float = option(
        0.1, "Regularises the HAL ratio for atoms with small forces.", unit="eV/A"
    )
    min_distance: float | None = option(
        0.5, "Stop (blow-up) when two atoms come closer than this.", unit="A"
    )
    max_force: float | None = option(
        50.0,
        "Stop (blow-up) when an unbiased force (the model's own, without the bias) exceeds this.",
        unit="eV/A",
    )
    min_distance_ratio: float | None = option(
        0.6,
        "Stop (blow-up) when atoms i, j come closer than this times the sum of their covalent "
        "radii (ASE's covalent_radii), e.g. 0.7: a C-H bond at 0.75 A.",
    )
    max_bond_stretch: float | None = option(
        1.5,
        "Stop (blow-up) when a bond of the walker's first frame is longer than this times the "
        "sum of covalent radii, e.g. 1.5: C-H at 1.6 A (molecules; skipped for periodic cells).",
    )
    min_volume_ratio: float | None = option(
        0.5,
        "Stop (blow-up) when a periodic cell's volume falls below this fraction of the walker's "
        "first cell (NPT: the cell collapses); 0.5 lets a MIL-53(Al) cell breathe from the "
        "large- to the narrow-pore state (0.67).",
    )
    max_volume_ratio: float | None = option(
        2.0,
        "Stop (blow-up) when a periodic cell's volume exceeds this multiple of the walker's first "
        "cell (NPT: the cell is pulled open, a solid boiling off); 2 lets a MIL-53(Al) cell "
        "breathe from the narrow- to the large-pore state (1.5).",
    )
    max_shear: float | None = option(
        1.0,
        "Stop (blow-up) when a periodic cell's shear from the walker's first cell, the largest "
        "|ln s_k - mean_l ln s_l| over the principal stretches s_k (deviatoric Hencky strain), "
        "exceeds this; 1.0: one axis e^1.5 = 4.5 times another relative to the start.",
    )
    max_energy_rise: float | None = option(
        None,
        "Stop when the model's unbiased energy per atom rises more than this above the lowest "
        "the walker has seen (the frame is not kept; NPT: the enthalpy E + P0 V); overrides "
        "max_energy_rise_kt.",
        unit="eV/atom",
    )
    max_energy_rise_kt: float | None = option(
        4.0,
        "The energy-rise stop in units of k_B T per atom at the walker's temperature (300 K: "
        "0.103 eV/atom; thermal MD sits about 1.5 k_B T above its lowest), used when "
        "max_energy_rise is null; null with it null: no rise stop.",
        unit="k_B T/atom",
    )
    max_energy_drop: float | None = option(
        None,
        "Stop when the model's unbiased energy per atom falls more than this below the walker's "
        "first frame (the frame is not kept): a fall that far means a spurious low of the model "
        "(a hole), which the bias steers into (NPT: the enthalpy E + P0 V, so start from a cell "
        "relaxed at the target pressure); overrides max_energy_drop_kt.",
        unit="eV/atom",
    )
    max_energy_drop_kt: float | None = option(
        2.0,
        "The energy-drop stop in units of k_B T per atom at the walker's temperature (300 K: "
        "0.052 eV/atom), used when max_energy_drop is null; null with it null: no drop stop. "
        "Start walkers near equilibrium: a start far up the surface falls that far at once.",
        unit="k_B T/atom",
    )

    def __post_init__(self):
        for name in (
            "max_uncertainty",
            "max_hal_ratio",
            "min_distance",
            "max_force",
            "hal_eps",
            "min_distance_ratio",
            "max_bond_stretch",
            "min_volume_ratio",
            "max_volume_ratio",
            "max_shear",
            "max_energy_rise",
            "max_energy_drop",
            "max_energy_rise_kt",
            "max_energy_drop_kt",
        ):
            value = getattr(self, name)
            if value is None and name != "hal_eps":
                continue
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(
                    f"WatchdogConfig: {name} must be a finite number >= 0 (or None to switch the "
                    f"check off), got {value!r}"
                )

    def energy_limits(self, temperature: float | None) -> tuple[float | None, float | None]:
        """(rise, drop) limits in eV/atom for a walker at ``temperature`` (K): the eV/atom
        values where given, else the k_B T multiples (None: that check is off; the k_B T ones
        are off without a temperature above 0 K)."""
        kt = None if temperature is None or temperature <= 0 else K_B * float(temperature)

        def limit(absolute: float | None, in_kt: float | None) -> float | None:
            if absolute is not None:
                return float(absolute)
            return None if in_kt is None or kt is None else in_kt * kt

        return (
            limit(self.max_energy_rise, self.max_energy_rise_kt),
            limit(self.max_energy_drop, self.max_energy_drop_kt),
        )


@dataclass(frozen=True)
class Verdict:
    """The watchdog's answer for one frame: ``reason`` is None when the walker may go on."""

    reason: str | None
    message: str = ""
    max_uncertainty: float = float("nan")


def hal_ratio(atom_uncertainty: np.ndarray, forces: np.ndarray, eps: float) -> float:
    """max_i u_i / (|F_i| + eps); u (N,) eV/A, F (N, 3) eV/A."""
    return float(np.max(atom_uncertainty / (np.linalg.norm(forces, axis=1) + eps)))


def min_pair_distance(atoms: Atoms, cutoff: float) -> float:
    """Shortest interatomic distance (A) below ``cutoff``, periodic images included; inf if none."""
    from vesin import NeighborList

    box = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    (d,) = NeighborList(cutoff=cutoff, full_list=False).compute(
        points=atoms.positions, box=box, periodic=atoms.pbc.tolist(), quantities="d"
    )
    return float(d.min()) if d.size else float("inf")


def min_distance_ratio(atoms: Atoms, ratio: float) -> tuple[float, int, int]:
    """(min over pairs of d_ij / (r_i + r_j), i, j) among pairs closer than ``ratio`` times
    the sum of their covalent radii r (A), periodic images included; (inf, -1, -1) if none."""
    from ase.data import covalent_radii
    from vesin import NeighborList

    if ratio <= 0:
        return float("inf"), -1, -1
    radii = covalent_radii[atoms.numbers]
    box = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    i, j, d = NeighborList(cutoff=2 * ratio * radii.max(), full_list=False).compute(
        points=atoms.positions, box=box, periodic=atoms.pbc.tolist(), quantities="ijd"
    )
    scaled = d / (radii[i] + radii[j])
    if not np.any(scaled < ratio):
        return float("inf"), -1, -1
    k = int(np.argmin(scaled))
    return float(scaled[k]), int(i[k]), int(j[k])


def _non_finite(atoms: Atoms, results: dict) -> str | None:
    checks = {"positions": atoms.positions, "cell": atoms.cell.array}
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS, keys.FORCES_UNCERTAINTY):
        if name in results:
            checks[name] = results[name]
    bad = [name for name, value in checks.items() if not np.isfinite(value).all()]
    return f"non-finite {', '.join(bad)}" if bad else None


def cell_stretches(first_inverse: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """(3,) ln s_k, s_k the principal stretches (singular values of M = h0^-1 h) from the cell
    h0 (given as its inverse) to ``cell`` (rows are cell vectors): 0.5 ln of the eigenvalues of
    M M^T. Their sum is ln(V / V0)."""
    m = first_inverse @ cell
    return 0.5 * np.log(np.linalg.eigvalsh(m @ m.T))


def cell_shear(first: np.ndarray, cell: np.ndarray) -> float:
    """max_k |ln s_k - (1/3) sum_l ln s_l| (see :func:`cell_stretches`): the deviatoric
    logarithmic strain from ``first`` to ``cell``."""
    logs = cell_stretches(np.linalg.inv(first), cell)
    return float(np.abs(logs - logs.mean()).max())


class Watchdog:
    """Applies a :class:`WatchdogConfig` to a frame and its calculator results; ``temperature``
    (K) of the walker sets the k_B T energy limits (None: only the eV/atom ones). ``pressure``
    (GPa, NPT walkers): the energy checks watch the enthalpy E + P0 V, the quantity whose
    fluctuations NPT keeps thermal (under high pressure E alone rises by P0 |dV| as the cell
    shrinks)."""

    def __init__(
        self,
        config: WatchdogConfig,
        temperature: float | None = None,
        pressure: float | None = None,
    ):
        self.config = config
        self.rise_limit, self.drop_limit = config.energy_limits(temperature)
        self.pressure = None if pressure is None else float(pressure) * units.GPa  # eV/A^3
        self.lowest_energy = float("inf")  # eV/atom, of the frames seen so far
        self.first_energy = None  # eV/atom, of the first frame (max_energy_drop)
        self.bonds = None  # BondGraph of the first frame (max_bond_stretch, molecules)
        self._first_inverse = None  # inverse of the first periodic cell (cell checks)
        self._checked_cell = None  # bytes of the last cell that passed the cell checks

    def collapsed(self, atoms: Atoms) -> Verdict | None:
        """The cell checks (``cell_volume``, ``cell_shear``) on ``atoms``' cell, or None; takes
        the first cell from the first frame it sees (a cell checked just before passes at
        once). Cells not periodic in all three directions are not checked."""
        cfg = self.config
        limits = (cfg.min_volume_ratio, cfg.max_volume_ratio, cfg.max_shear)
        if not atoms.pbc.all() or all(limit is None for limit in limits):
            return None
        cell = atoms.cell.array
        key = cell.tobytes()
        if key == self._checked_cell or not np.isfinite(cell).all():
            return None  # passed already, or the non-finite check's
        if self._first_inverse is None:
            self._first_inverse = np.linalg.inv(cell)
        logs = cell_stretches(self._first_inverse, cell)
        ratio, shear = float(np.exp(logs.sum())), float(np.abs(logs - logs.mean()).max())
        if cfg.min_volume_ratio is not None and ratio < cfg.min_volume_ratio:
            text = f"cell volume {ratio:.3g} times the first cell's < min_volume_ratio"
            return Verdict("cell_volume", f"{text} {cfg.min_volume_ratio}")
        if cfg.max_volume_ratio is not None and ratio > cfg.max_volume_ratio:
            text = f"cell volume {ratio:.3g} times the first cell's > max_volume_ratio"
            return Verdict("cell_volume", f"{text} {cfg.max_volume_ratio}")
        if cfg.max_shear is not None and shear > cfg.max_shear:
            text = f"cell shear {shear:.3g} (deviatoric log strain) > max_shear"
            return Verdict("cell_shear", f"{text} {cfg.max_shear}")
        self._checked_cell = key
        return None

    def _broken(self, atoms: Atoms) -> str | None:
        """The bond-stretch check; takes the bond graph from the first frame it sees."""
        limit = self.config.max_bond_stretch
        if limit is None or atoms.pbc.any():
            return None
        if self.bonds is None:
            from uq_bias.bonds import BondGraph

            self.bonds = BondGraph.of(atoms)
        stretch = self.bonds.stretch(atoms)
        if not stretch.size or stretch.max() <= limit:
            return None
        i, j = self.bonds.pairs[int(np.argmax(stretch))]
        return (
            f"bond {i}-{j} at {stretch.max():.3g} times its covalent radii sum > "
            f"max_bond_stretch {limit}"
        )

    def _energy_limit(self, atoms: Atoms, results: dict) -> tuple[str, str] | None:
        """The energy-rise and energy-drop checks; update the first and lowest energy per atom."""
        energy = results.get(keys.UNBIASED_ENERGY, results.get(keys.ENERGY))
        rise_limit, drop_limit = self.rise_limit, self.drop_limit
        if energy is None or (rise_limit is None and drop_limit is None):
            return None
        what = "unbiased energy"
        if self.pressure is not None and atoms.pbc.all():
            energy, what = float(energy) + self.pressure * atoms.get_volume(), "unbiased E + P0 V"
        per_atom = float(energy) / len(atoms)
        if self.first_energy is None:
            self.first_energy = per_atom
        self.lowest_energy = min(self.lowest_energy, per_atom)
        rise, drop = per_atom - self.lowest_energy, self.first_energy - per_atom
        if rise_limit is not None and rise > rise_limit:
            text = f"{what} {rise:.3g} eV/atom above the walker's lowest > rise limit"
            return "energy_rise", f"{text} {rise_limit:.3g}"
        if drop_limit is not None and drop > drop_limit:
            text = f"{what} {drop:.3g} eV/atom below the walker's first > drop limit"
            return "energy_drop", f"{text} {drop_limit:.3g}"
        return None

    def __call__(self, atoms: Atoms, results: dict) -> Verdict:
        cfg = self.config
        u = results.get(keys.FORCES_UNCERTAINTY)
        u_max = float(np.max(u)) if u is not None and np.size(u) else float("nan")
        bad = _non_finite(atoms, results)
        if bad:
            return Verdict("non_finite", bad, u_max)
        collapsed = self.collapsed(atoms)
        if collapsed is not None:
            return Verdict(collapsed.reason, collapsed.message, u_max)
        unbiased = np.asarray(results.get(keys.UNBIASED_FORCES, results[keys.FORCES]))
        f_max = float(np.linalg.norm(unbiased, axis=1).max())
        if cfg.max_force is not None and f_max > cfg.max_force:
            text = f"max unbiased |F| = {f_max:.3g} eV/A > {cfg.max_force}"
            return Verdict("max_force", text, u_max)
        if cfg.min_distance is not None and len(atoms) > 1:
            d_min = min_pair_distance(atoms, cfg.min_distance)
            if d_min < cfg.min_distance:
                text = f"atoms {d_min:.3g} A apart < min_distance {cfg.min_distance}"
                return Verdict("min_distance", text, u_max)
        if cfg.min_distance_ratio is not None and len(atoms) > 1:
            ratio, i, j = min_distance_ratio(atoms, cfg.min_distance_ratio)
            if ratio < cfg.min_distance_ratio:
                text = (
                    f"atoms {i} and {j} at {ratio:.3g} times their covalent radii sum < "
                    f"min_distance_ratio {cfg.min_distance_ratio}"
                )
                return Verdict("min_distance_ratio", text, u_max)
        broken = self._broken(atoms)
        if broken:
            return Verdict("bond_stretch", broken, u_max)
        limit = self._energy_limit(atoms, results)
        if limit:
            return Verdict(*limit, u_max)
        if u is None:
            return Verdict(None, "", u_max)
        if cfg.max_uncertainty is not None and u_max > cfg.max_uncertainty:
            text = f"max u_i = {u_max:.3g} eV/A > {cfg.max_uncertainty}"
            return Verdict("uncertainty", text, u_max)
        if cfg.max_hal_ratio is not None:
            ratio = hal_ratio(np.asarray(u), unbiased, cfg.hal_eps)
            if ratio > cfg.max_hal_ratio:
                text = f"max u_i/(|F_i|+eps) = {ratio:.3g} > {cfg.max_hal_ratio}"
                return Verdict("hal", text, u_max)
        return Verdict(None, "", u_max)
