"""The watchdog on single frames: each check against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from uq_bias import keys
from uq_bias.bias import BiasConfig
from uq_bias.calculator import Calculator
from uq_bias.dynamics.watchdog import (
    RESTARTABLE,
    Watchdog,
    WatchdogConfig,
    hal_ratio,
    min_pair_distance,
)


@pytest.fixture
def evaluated(untrained_ensemble, cu8_frames):
    atoms = cu8_frames[2].copy()
    atoms.calc = Calculator(untrained_ensemble)
    atoms.get_forces()
    return atoms, dict(atoms.calc.results)


def test_min_pair_distance_matches_ase():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.2, seed=1)
    assert min_pair_distance(atoms, 3.0) == pytest.approx(neighbor_list("d", atoms, 3.0).min())
    assert min_pair_distance(atoms, 0.1) == float("inf")


def test_hal_ratio_is_the_formula():
    u = np.array([0.1, 0.5, 0.2])
    forces = np.array([[0.0, 0.0, 1.0], [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    assert hal_ratio(u, forces, 0.1) == pytest.approx(max(0.1 / 1.1, 0.5 / 5.1, 0.2 / 0.1))


def test_each_check_fires_alone(evaluated):
    atoms, results = evaluated
    u_max = results[keys.FORCES_UNCERTAINTY].max()
    f_max = np.linalg.norm(results[keys.FORCES], axis=1).max()
    d_min = neighbor_list("d", atoms, 3.0).min()
    assert Watchdog(WatchdogConfig())(atoms, results).reason is None
    cases = {
        "uncertainty": WatchdogConfig(max_uncertainty=0.99 * u_max),
        "max_force": WatchdogConfig(max_force=0.99 * f_max),
        "min_distance": WatchdogConfig(min_distance=1.01 * d_min),
    }
    for reason, config in cases.items():
        verdict = Watchdog(config)(atoms, results)
        assert verdict.reason == reason
        assert verdict.max_uncertainty == pytest.approx(u_max)
    quiet = WatchdogConfig(max_uncertainty=1.01 * u_max, max_force=1.01 * f_max)
    assert Watchdog(quiet)(atoms, results).reason is None


def test_max_force_looks_at_the_unbiased_forces(fitted_ensemble, cu8_frames):
    """A strong bias (tau = 50) on a frame with small forces: max_force set between the
    unbiased forces (from a calculator without bias) and the biased ones does not fire."""
    atoms = cu8_frames[0].copy()
    atoms.calc = Calculator(fitted_ensemble)
    f_unbiased = np.linalg.norm(atoms.get_forces(), axis=1).max()
    atoms.calc = Calculator(fitted_ensemble, bias=BiasConfig(tau=50.0))
    f_biased = np.linalg.norm(atoms.get_forces(), axis=1).max()
    assert f_biased > 4 * f_unbiased
    limit = 2 * f_unbiased
    verdict = Watchdog(WatchdogConfig(max_force=limit))(atoms, dict(atoms.calc.results))
    assert verdict.reason is None
    lower = Watchdog(WatchdogConfig(max_force=0.5 * f_unbiased))(atoms, dict(atoms.calc.results))
    assert lower.reason == "max_force" and "unbiased" in lower.message


def test_non_finite_values_are_a_blow_up(evaluated):
    atoms, results = evaluated
    broken = atoms.copy()
    broken.positions[3] = np.nan
    verdict = Watchdog(WatchdogConfig())(broken, results)
    assert verdict.reason == "non_finite" and "positions" in verdict.message
    bad = dict(results)
    bad[keys.FORCES] = results[keys.FORCES].copy()
    bad[keys.FORCES][0, 0] = np.inf
    verdict = Watchdog(WatchdogConfig(max_uncertainty=0.0))(atoms, bad)
    assert verdict.reason == "non_finite" and "forces" in verdict.message


def test_negative_thresholds_are_refused():
    names = ("max_uncertainty", "max_hal_ratio", "min_distance", "max_force", "hal_eps")
    for name in (
        *names,
        "min_distance_ratio",
        "max_bond_stretch",
        "max_energy_rise",
        "max_energy_drop",
    ):
        with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
            WatchdogConfig(**{name: -1.0})


def test_min_distance_ratio_against_all_pair_distances():
    """The scaled closest pair of a squeezed molecule, from ASE's full distance matrix."""
    from ase.build import molecule
    from ase.data import covalent_radii

    from uq_bias.dynamics.watchdog import min_distance_ratio

    atoms = molecule("CH3CH2OH")
    atoms.positions[3] += 0.35 * (atoms.positions[0] - atoms.positions[3])  # squeeze an H to C
    radii = covalent_radii[atoms.numbers]
    scaled = atoms.get_all_distances() / (radii[:, None] + radii[None, :])
    np.fill_diagonal(scaled, np.inf)
    expected = scaled.min()
    ratio, i, j = min_distance_ratio(atoms, 1.0)
    assert ratio == pytest.approx(expected, rel=1e-10)
    assert scaled[i, j] == pytest.approx(expected, rel=1e-10)
    assert min_distance_ratio(atoms, 0.9 * expected)[0] == float("inf")
    results = {keys.ENERGY: 0.0, keys.FORCES: np.zeros((len(atoms), 3))}
    loud = WatchdogConfig(min_distance=None, min_distance_ratio=1.01 * expected)
    verdict = Watchdog(loud)(atoms, results)
    assert verdict.reason == "min_distance_ratio"
    quiet = WatchdogConfig(min_distance=None, min_distance_ratio=0.99 * expected)
    assert Watchdog(quiet)(atoms, results).reason is None


def test_energy_rise_is_measured_from_the_lowest_energy_seen(evaluated):
    """Unbiased energies (eV) fed in turn: the rise per atom counts from the running minimum,
    and the biased energy is not the one watched."""
    atoms, results = evaluated
    n = len(atoms)
    watchdog = Watchdog(WatchdogConfig(max_energy_rise=0.1))

    def step(unbiased: float, biased: float | None = None):
        frame = dict(results, **{keys.UNBIASED_ENERGY: unbiased})
        frame[keys.ENERGY] = unbiased if biased is None else biased
        return watchdog(atoms, frame).reason

    assert step(0.0) is None
    assert step(-0.5 * n) is None  # new lowest: -0.5 eV/atom
    assert step(-0.41 * n, biased=-5.0 * n) is None  # 0.09 eV/atom above the lowest
    assert step(-0.39 * n, biased=-5.0 * n) == "energy_rise"  # 0.11 above
    # without a temperature the default k_B T limits are off (see the k_B T test below)
    assert Watchdog(WatchdogConfig())(atoms, dict(results, energy=1e6)).reason is None


def test_energy_drop_is_measured_from_the_first_frame(evaluated):
    """Unbiased energies (eV) fed in turn: the drop per atom counts from the first frame, not
    from a running maximum; the biased energy is not the one watched; the stop is one a walker
    starts again after."""
    atoms, results = evaluated
    n = len(atoms)
    watchdog = Watchdog(WatchdogConfig(max_energy_drop=0.05))

    def step(unbiased: float, biased: float | None = None):
        frame = dict(results, **{keys.UNBIASED_ENERGY: unbiased})
        frame[keys.ENERGY] = unbiased if biased is None else biased
        return watchdog(atoms, frame).reason

    assert step(-1.0 * n) is None  # first frame: -1.0 eV/atom
    assert step(-0.9 * n) is None  # higher: a rise is not a drop
    assert step(-1.04 * n, biased=-9.0 * n) is None  # 0.04 below the first
    assert step(-1.06 * n) == "energy_drop"  # 0.06 below the first
    assert "energy_drop" in RESTARTABLE


def test_npt_energy_checks_watch_the_enthalpy():
    """Under NPT at P0 the energy checks watch H = E + P0 V per atom: a cell compressed by dV
    at the same E has H lower by P0 |dV| / N, a drop; at P0 = 0 (or NVT) nothing changes. The
    closed form decides the verdict on each side of the limit."""
    from ase import units
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    n, results = len(atoms), {keys.ENERGY: -1.0, keys.FORCES: np.zeros((4, 3))}
    p0 = 20.0  # GPa
    limit = 0.05  # eV/atom
    # the volume change that lowers P0 V by exactly the limit per atom, then 2 % less and more
    dv = limit * n / (p0 * units.GPa)
    for factor, expected in ((0.98, None), (1.02, "energy_drop")):
        watchdog = Watchdog(WatchdogConfig(max_energy_drop=limit), pressure=p0)
        assert watchdog(atoms, results).reason is None  # the first frame
        squeezed = atoms.copy()
        volume = atoms.get_volume() - factor * dv
        squeezed.set_cell(atoms.cell * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        assert watchdog(squeezed, results).reason == expected
    nvt = Watchdog(WatchdogConfig(max_energy_drop=limit))
    nvt(atoms, results)
    assert nvt(squeezed, results).reason is None  # same E: no drop without the pressure


@pytest.mark.parametrize("scale, expected", [(0.79, "< min"), (0.81, None), (1.24, None)])
def test_cell_volume_limits_on_both_sides(scale, expected):
    """A skewed cell scaled by s in every direction has volume ratio s^3 to its first cell:
    min_volume_ratio 0.5 and max_volume_ratio 2 stop it below 0.5 and above 2 only."""
    from ase.build import bulk

    first = bulk("Cu", "fcc", a=3.6)  # the primitive cell: skewed
    results = {keys.ENERGY: -1.0, keys.FORCES: np.zeros((1, 3))}
    config = WatchdogConfig(min_volume_ratio=0.5, max_volume_ratio=2.0, min_distance=None)
    for s, want in ((scale, expected), (1.27, "> max")):  # 1.27^3 = 2.05
        watchdog = Watchdog(config)
        assert watchdog(first, results).reason is None
        moved = first.copy()
        moved.set_cell(first.cell * s, scale_atoms=True)
        verdict = watchdog(moved, results)
        if want is None:
            assert verdict.reason is None, verdict.message
        else:
            assert verdict.reason == "cell_volume" and f"{s**3:.3g} times" in verdict.message
            assert f"{want}_volume_ratio" in verdict.message


def test_bond_stretch_compares_with_the_walkers_first_frame(evaluated):
    """A hydrogen pulled from its carbon along the bond: a blow-up past max_bond_stretch times
    the covalent radii sum (from ASE's table), not before; a crystal is never checked."""
    from ase.build import molecule
    from ase.data import covalent_radii

    start = molecule("CH3CH2OH")
    d = start.get_all_distances()
    hs, cs = np.flatnonzero(start.numbers == 1), np.flatnonzero(start.numbers == 6)
    k = np.argmin(d[np.ix_(hs, cs)])
    h, c = int(hs[k // len(cs)]), int(cs[k % len(cs)])  # the shortest C-H bond
    limit = covalent_radii[1] + covalent_radii[6]
    bond = start.positions[h] - start.positions[c]
    assert np.linalg.norm(bond) < 1.2 * limit

    def pulled(scale):
        atoms = start.copy()
        atoms.positions[h] = start.positions[c] + scale * limit * bond / np.linalg.norm(bond)
        return atoms

    results = {keys.ENERGY: 0.0, keys.FORCES: np.zeros((len(start), 3))}
    watchdog = Watchdog(WatchdogConfig(min_distance=None, max_bond_stretch=1.5))
    assert watchdog(start, results).reason is None
    assert watchdog(pulled(1.45), results).reason is None
    verdict = watchdog(pulled(1.55), results)
    assert verdict.reason == "bond_stretch" and f"bond {min(c, h)}-{max(c, h)}" in verdict.message
    crystal, crystal_results = evaluated
    far = crystal.copy()
    far.positions[0] += [0.0, 0.0, 1.0]
    check = Watchdog(WatchdogConfig(min_distance=None, max_bond_stretch=1.0))
    assert check(crystal, crystal_results).reason is None
    assert check(far, crystal_results).reason is None


def test_energy_limits_are_multiples_of_kt_at_the_walkers_temperature(evaluated):
    """The default stops are 4 and 2 k_B T per atom (k_B written out): at 300 K the alanine
    values 0.1 and 0.05 eV/atom to 5%, twice that at 600 K, off at 0 K or without a
    temperature; eV/atom values override them; a walker at T stops at the k_B T rise."""
    k_b = 8.617333262e-5  # eV/K
    config = WatchdogConfig()
    rise, drop = config.energy_limits(300.0)
    assert (rise, drop) == pytest.approx((4 * k_b * 300, 2 * k_b * 300), rel=1e-6)
    assert (rise, drop) == pytest.approx((0.1, 0.05), rel=0.05)
    assert config.energy_limits(600.0) == pytest.approx((2 * rise, 2 * drop))
    assert config.energy_limits(0.0) == config.energy_limits(None) == (None, None)
    assert WatchdogConfig(max_energy_rise=0.2).energy_limits(300.0) == (0.2, pytest.approx(drop))
    assert WatchdogConfig(max_energy_drop_kt=None).energy_limits(300.0)[1] is None

    atoms, results = evaluated
    n, temperature = len(atoms), 100.0
    watchdog = Watchdog(WatchdogConfig(max_energy_drop_kt=None), temperature)
    limit = 4 * k_b * temperature

    def step(unbiased_per_atom: float):
        return watchdog(atoms, dict(results, **{keys.UNBIASED_ENERGY: unbiased_per_atom * n}))

    assert step(0.0).reason is None
    assert step(0.99 * limit).reason is None
    verdict = step(1.01 * limit)
    assert verdict.reason == "energy_rise" and f"{limit:.3g}" in verdict.message


@pytest.mark.parametrize("name", ["max_energy_rise_kt", "max_energy_drop_kt"])
def test_negative_kt_limits_are_refused(name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        WatchdogConfig(**{name: -1.0})
