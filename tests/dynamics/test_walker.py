"""Exploration walkers: the bias raises the uncertainty reached, the bias stress moves the cell,
the watchdog stops where an independent recomputation says it should, frames and trajectory."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import replace

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read

from uq_bias import keys
from uq_bias.bias import BiasConfig
from uq_bias.calculator import Calculator
from uq_bias.dynamics import ExploreConfig, WatchdogConfig, explore, walker_specs
from uq_bias.dynamics.walker import make_dynamics
from uq_bias.dynamics.watchdog import hal_ratio, min_pair_distance

FAST = {"timestep": 2.0, "temperature": 300.0, "progress": False, "seed": 11}
#: The watchdog before issue 23's defaults (no energy stops, no distance ratio or bond stretch):
#: these runs measure the bias itself, from a Cu8 training frame above equilibrium that falls
#: more than the default 2 k_B T/atom drop within 40 steps.
NO_ENERGY_STOPS = WatchdogConfig(
    max_energy_rise_kt=None, max_energy_drop_kt=None, min_distance_ratio=None, max_bond_stretch=None
)


def _calc(ensemble, tau):
    """A calculator with the absolute bias ``tau`` and no fade (the default fades in k_B T)."""
    return Calculator(ensemble, bias=BiasConfig(tau=tau, fade_kt=None))


def _start_results(ensemble, start):
    """The unbiased results at the start structure (step 0, not kept as a frame)."""
    atoms = start.copy()
    atoms.calc = Calculator(ensemble)
    atoms.get_forces()
    return atoms.calc.results


def _threshold(start_value: float, values: np.ndarray, q: float, above: bool = True):
    """A threshold beyond the start value (step 0) that the reference run (steps 1, 2, ...)
    crosses, and the first step that crosses it (``above``: values rising past it)."""
    sign = 1.0 if above else -1.0
    threshold = sign * max(sign * float(np.quantile(values, q)), sign * start_value * (1 + 1e-6))
    crossed = values > threshold if above else values < threshold
    assert crossed.any(), "the reference run never goes beyond its start value"
    return threshold, int(np.argmax(crossed)) + 1


@pytest.fixture(scope="module")
def start(cu8_frames):
    """A training frame: the models agree here, MD moves into less known ground."""
    return cu8_frames[0]


@pytest.fixture(scope="module")
def lattice(cu8_frames):
    """The ideal fcc lattice with the composition of the training frames."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.numbers = cu8_frames[0].numbers
    return atoms


@pytest.fixture(scope="module")
def nvt_runs(fitted_ensemble, start):
    """Unbiased and biased NVT from the same start and seeds, every frame kept."""
    config = ExploreConfig(steps=40, sample_every=1, watchdog=NO_ENERGY_STOPS, **FAST)
    return {
        tau: explore(_calc(fitted_ensemble, tau), start, config).walkers[0] for tau in (0.0, 1.5)
    }


@pytest.fixture(scope="module")
def lattice_run(fitted_ensemble, lattice):
    """Biased NVT from the ideal lattice (forces ~0, neighbours 2.55 A apart), every frame."""
    config = ExploreConfig(steps=40, sample_every=1, **FAST)
    return explore(_calc(fitted_ensemble, 1.5), lattice, config).walkers[0]


def test_bias_reaches_higher_uncertainty(nvt_runs, fitted_ensemble, start):
    """The biased quantity, the energy uncertainty U, gets higher with the bias on."""
    plain, biased = nvt_runs[0.0], nvt_runs[1.5]
    assert plain.stop_reason == biased.stop_reason == "completed"
    u_plain = max(f.info[keys.ENERGY_UNCERTAINTY] for f in plain.frames)
    u_biased = max(f.info[keys.ENERGY_UNCERTAINTY] for f in biased.frames)
    assert u_biased > 1.2 * u_plain
    u_start = _start_results(fitted_ensemble, start)[keys.ENERGY_UNCERTAINTY]
    assert biased.max_energy_uncertainty == pytest.approx(max(u_biased, u_start))


def test_relative_bias_raises_gradient_feature_uncertainty(fitted_gradient_model, start):
    """With a gradient-feature posterior and tau_rel (bias force = the physical force on
    average once the 5-step window is full), U climbs higher than without bias."""
    config = ExploreConfig(steps=40, sample_every=1, watchdog=NO_ENERGY_STOPS, **FAST)
    peaks, taus = {}, None
    for bias in (BiasConfig(tau=0.0), BiasConfig(tau_rel=1.0, window=5, fade_kt=None)):
        calc = Calculator(fitted_gradient_model, bias=bias)
        walker = explore(calc, start, config).walkers[0]
        peaks[bias.tau_rel] = max(f.info[keys.ENERGY_UNCERTAINTY] for f in walker.frames)
        taus = [f.info[keys.BIAS_STRENGTH] for f in walker.frames]
    # unbiased until the window is full: steps 0 (the start, not kept) to 4, biased from step 5
    assert taus[:4] == [0.0] * 4 and min(taus[4:]) > 0
    assert peaks[1.0] > 1.1 * peaks[None]


def test_frames_carry_their_results(nvt_runs, fitted_ensemble, start):
    walker = nvt_runs[1.5]
    assert [f.info["step"] for f in walker.frames] == list(range(1, 41))
    frame = walker.frames[-1]
    np.testing.assert_allclose(
        frame.arrays["model_forces"],
        frame.arrays[keys.UNBIASED_FORCES] + frame.arrays[keys.BIAS_FORCES],
    )
    assert frame.arrays[keys.FORCES_UNCERTAINTY].shape == (len(frame),)
    assert frame.calc is None  # model predictions are never mistaken for labels
    u = np.array([f.arrays[keys.FORCES_UNCERTAINTY].max() for f in walker.frames])
    u_start = _start_results(fitted_ensemble, start)[keys.FORCES_UNCERTAINTY].max()
    assert walker.max_uncertainty == pytest.approx(max(u.max(), u_start))


def test_uncertainty_threshold_stops_at_the_first_crossing(fitted_ensemble, start, nvt_runs):
    """The walker stops at the first step past the threshold and keeps that frame; restarts
    left do not start it again (it found what it looked for)."""
    reference = nvt_runs[0.0].frames
    u = np.array([f.arrays[keys.FORCES_UNCERTAINTY].max() for f in reference])
    u_start = _start_results(fitted_ensemble, start)[keys.FORCES_UNCERTAINTY].max()
    threshold, first = _threshold(u_start, u, 0.6)
    watchdog = replace(NO_ENERGY_STOPS, max_uncertainty=threshold)  # as the reference run
    config = ExploreConfig(steps=40, sample_every=7, watchdog=watchdog, restarts=3, **FAST)
    walker = explore(_calc(fitted_ensemble, 0.0), start, config).walkers[0]
    assert (walker.stop_reason, walker.stop_step) == ("uncertainty", first)
    steps = [f.info["step"] for f in walker.frames]
    assert steps == list(range(7, first, 7)) + [first]  # the tripping frame is kept
    np.testing.assert_allclose(walker.frames[-1].positions, reference[first - 1].positions)


def test_hal_criterion_stops_at_the_first_crossing(fitted_ensemble, start, nvt_runs):
    reference = nvt_runs[0.0].frames
    eps = 0.05
    ratios = np.array(
        [
            hal_ratio(f.arrays[keys.FORCES_UNCERTAINTY], f.arrays[keys.UNBIASED_FORCES], eps)
            for f in reference
        ]
    )
    r = _start_results(fitted_ensemble, start)
    ratio_start = hal_ratio(r[keys.FORCES_UNCERTAINTY], r[keys.FORCES], eps)
    threshold, first = _threshold(ratio_start, ratios, 0.7)
    watchdog = replace(NO_ENERGY_STOPS, max_hal_ratio=threshold, hal_eps=eps)  # as the reference
    config = ExploreConfig(steps=40, sample_every=100, watchdog=watchdog, **FAST)
    walker = explore(_calc(fitted_ensemble, 0.0), start, config).walkers[0]
    assert (walker.stop_reason, walker.stop_step) == ("hal", first)
    assert len(walker.frames) == 1


def test_blow_up_stops_with_reason_and_keeps_frames(fitted_ensemble, lattice, lattice_run):
    """A min-distance limit the run goes below: the walker stops at the first step closer
    than that (found with ASE's own neighbour list) and keeps the frames before it, not the
    broken one."""
    from ase.neighborlist import neighbor_list

    d_min = np.array([neighbor_list("d", f, 3.0).min() for f in lattice_run.frames])
    limit, first = _threshold(neighbor_list("d", lattice, 3.0).min(), d_min, 0.5, above=False)
    watchdog = WatchdogConfig(min_distance=limit)
    config = ExploreConfig(steps=40, sample_every=1, watchdog=watchdog, **FAST)
    walker = explore(_calc(fitted_ensemble, 1.5), lattice, config).walkers[0]
    assert (walker.stop_reason, walker.stop_step) == ("min_distance", first)
    assert [f.info["step"] for f in walker.frames] == list(range(1, first))
    assert "apart" in walker.message
    assert min_pair_distance(lattice_run.frames[first - 1], 3.0) == pytest.approx(d_min[first - 1])


def test_max_force_stops(fitted_ensemble, lattice, lattice_run):
    """max_force looks at the unbiased forces (the model's own), recorded in every frame."""
    frames = lattice_run.frames
    f_max = np.array([np.linalg.norm(f.arrays["unbiased_forces"], axis=1).max() for f in frames])
    start_atoms = lattice.copy()
    start_atoms.calc = Calculator(fitted_ensemble)
    f_start = np.linalg.norm(start_atoms.get_forces(), axis=1).max()
    limit, first = _threshold(f_start, f_max, 0.5)
    config = ExploreConfig(steps=40, watchdog=WatchdogConfig(max_force=limit), **FAST)
    walker = explore(_calc(fitted_ensemble, 1.5), lattice, config).walkers[0]
    assert (walker.stop_reason, walker.stop_step) == ("max_force", first)
    assert [f.info["step"] for f in walker.frames] == list(range(10, first, 10))


def test_a_blown_up_walker_starts_again_for_its_steps_left(fitted_ensemble, lattice, tmp_path):
    """restarts 1: after the max_force stop at step s (as in test_max_force_stops) the walker
    starts again from its start with the stream (seed, 0, 1) for the 40 - s steps it has left.
    Its frames from there equal a run of ASE's own Langevin set up by hand (fresh velocities
    from that stream), steps counted on from s; it stops where that run first crosses the
    limit, if it does; the trajectory file holds both segments."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    limit = _max_force_limit(fitted_ensemble, lattice)
    watchdog = WatchdogConfig(max_force=limit)
    config = ExploreConfig(steps=40, sample_every=1, restarts=1, watchdog=watchdog, **FAST)
    trajectory = tmp_path / "t.extxyz"
    walker = explore(_calc(fitted_ensemble, 1.5), lattice, config, trajectory=trajectory)
    walker = walker.walkers[0]
    first = walker.restarts[0]["step"]
    assert walker.restarts[0]["reason"] == "max_force"

    atoms = lattice.copy()
    atoms.calc = _calc(fitted_ensemble, 1.5)
    rng = np.random.default_rng([FAST["seed"], 0, 1])
    thermalize_momenta(atoms, 300.0, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(
        atoms, 2.0 * units.fs, temperature_K=300.0, friction=0.01 / units.fs, fixcm=False, rng=rng
    )
    reference, stop = [], ("completed", 40)
    for step in range(1, 40 - first + 1):
        dynamics.run(1)
        unbiased = atoms.calc.results["unbiased_forces"]
        if np.linalg.norm(unbiased, axis=1).max() > limit:
            stop = ("max_force", first + step)
            break
        reference.append(atoms.positions.copy())
    assert (walker.stop_reason, walker.stop_step) == stop
    again = [f for f in walker.frames if f.info["step"] > first]
    assert [f.info["step"] for f in again] == list(range(first + 1, first + 1 + len(reference)))
    for frame, positions in zip(again, reference, strict=True):
        np.testing.assert_allclose(frame.positions, positions, atol=1e-8)
    back = read(trajectory, ":")
    assert [f.info["step"] for f in back] == [f.info["step"] for f in walker.frames]
    assert len(walker.frames) == first - 1 + len(reference)


def _max_force_limit(ensemble, lattice) -> float:
    """A max_force limit that the biased run from the lattice crosses, about half way."""
    run = explore(_calc(ensemble, 1.5), lattice, ExploreConfig(steps=40, sample_every=1, **FAST))
    f_max = [np.linalg.norm(f.arrays["unbiased_forces"], axis=1).max() for f in run.frames]
    start_atoms = lattice.copy()
    start_atoms.calc = Calculator(ensemble)
    f_start = np.linalg.norm(start_atoms.get_forces(), axis=1).max()
    return _threshold(f_start, np.array(f_max), 0.5)[0]


def test_strong_bias_is_not_a_blow_up(fitted_ensemble, lattice):
    """tau = 50 from the ideal lattice: bias forces of tens of eV/A, unbiased forces below
    1 eV/A. A max_force limit between the two does not end the walker; the frames record
    biased forces beyond the limit (what the check used to look at) and unbiased ones below it."""
    limit = 5.0
    overrides = {**FAST, "timestep": 1.0, "sample_every": 1}
    config = ExploreConfig(steps=5, watchdog=WatchdogConfig(max_force=limit), **overrides)
    walker = explore(_calc(fitted_ensemble, 50.0), lattice, config).walkers[0]
    assert walker.stop_reason == "completed"
    biased = [np.linalg.norm(f.arrays["model_forces"], axis=1).max() for f in walker.frames]
    unbiased = [np.linalg.norm(f.arrays["unbiased_forces"], axis=1).max() for f in walker.frames]
    assert len(walker.frames) == 5
    assert biased[0] > 2 * limit and max(unbiased) < limit


def test_coinciding_atoms_stop_as_non_finite(fitted_ensemble, start, tmp_path):
    """Two atoms on top of each other give NaN energies: the walker stops at once, with no
    frames and an empty trajectory, instead of running on garbage."""
    broken = start.copy()
    broken.positions[1] = broken.positions[0]
    config = ExploreConfig(steps=5, watchdog=WatchdogConfig(min_distance=None), **FAST)
    walker = explore(
        _calc(fitted_ensemble, 1.0), broken, config, trajectory=tmp_path / "t.extxyz"
    ).walkers[0]
    assert (walker.stop_reason, walker.stop_step, walker.frames) == ("non_finite", 0, [])
    assert "forces" in walker.message
    assert (tmp_path / "t.extxyz").read_text() == ""


def test_npt_bias_stress_moves_the_cell(fitted_ensemble, lattice):
    config = ExploreConfig(steps=40, sample_every=1, ensemble="npt", pdamp=100.0, **FAST)
    spread = {}
    for tau in (0.0, 1.5):
        walker = explore(_calc(fitted_ensemble, tau), lattice, config).walkers[0]
        assert walker.stop_reason == "completed"
        volumes = np.array([f.get_volume() for f in walker.frames])
        spread[tau] = volumes.std()
    assert spread[1.5] > 1.2 * spread[0.0]


def test_walkers_are_independent_and_reproducible(fitted_ensemble, lattice, tmp_path):
    config = ExploreConfig(steps=6, sample_every=3, **FAST)
    calc = _calc(fitted_ensemble, 1.0)
    a = explore(calc, lattice, config, walkers=2, trajectory=tmp_path / "t.extxyz")
    b = explore(calc, lattice, config, walkers=2)
    w0, w1 = a.walkers
    assert not np.allclose(w0.frames[-1].positions, w1.frames[-1].positions)
    np.testing.assert_array_equal(w0.frames[-1].positions, b.walkers[0].frames[-1].positions)
    assert len(a.frames) == 4
    for walker in a.walkers:
        assert walker.trajectory == tmp_path / f"t_w{walker.index}.extxyz"
        back = read(walker.trajectory, index=":")
        assert len(back) == len(walker.frames)
        for got, kept in zip(back, walker.frames):
            np.testing.assert_allclose(got.positions, kept.positions, atol=1e-8)
            np.testing.assert_allclose(
                got.arrays[keys.FORCES_UNCERTAINTY], kept.arrays[keys.FORCES_UNCERTAINTY]
            )
            assert got.info["step"] == kept.info["step"]


def test_progress_is_shown(fitted_gradient_model, start, capsys):
    config = ExploreConfig(steps=3, **{**FAST, "progress": True})
    explore(Calculator(fitted_gradient_model), start, config)
    err = capsys.readouterr().err
    assert "walker 0" in err and "3/3" in err and "completed, max u_i" in err


def test_walker_specs_pickle(fitted_ensemble, cu8_frames):
    config = ExploreConfig(steps=3, **FAST)
    specs = walker_specs(_calc(fitted_ensemble, 1.0), cu8_frames[:2], config, walkers=3)
    assert [s.start is cu8_frames[k % 2] for k, s in enumerate(specs)] == [True] * 3
    clone = pickle.loads(pickle.dumps(specs[1]))
    calc = clone.calculator()
    assert calc.bias.config == BiasConfig(tau=1.0, fade_kt=None)
    assert calc.bias is not specs[1].calculator().bias  # a fresh bias state per walker


def test_integrators_are_current_ase(fitted_ensemble, lattice):
    """No DeprecationWarning / FutureWarning from ASE for our integrator choices."""
    atoms = lattice.copy()
    atoms.calc = _calc(fitted_ensemble, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ensemble in ("nvt", "npt"):
            for cell in ("full", "isotropic"):
                config = ExploreConfig(ensemble=ensemble, npt_cell=cell, **FAST)
                make_dynamics(atoms, config, np.random.default_rng(0)).run(1)


def test_bad_input_is_a_clear_error(fitted_ensemble, untrained_ensemble, lattice, methanol):
    with pytest.raises(ValueError, match="NPT needs periodic cells"):
        explore(Calculator(untrained_ensemble), methanol, ensemble="npt", steps=2, progress=False)
    with pytest.raises(ValueError, match="max_uncertainty must be a finite number >= 0"):
        WatchdogConfig(max_uncertainty=-0.1)
    with pytest.raises(ValueError, match="min_distance must be"):
        WatchdogConfig(min_distance=-1.0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ExploreConfig(steps=0)
    with pytest.raises(ValueError, match="ensemble 'nve' not in"):
        ExploreConfig(ensemble="nve")
    with pytest.raises(TypeError, match="unknown option"):
        explore(Calculator(fitted_ensemble), lattice, stpes=3)
    with pytest.raises(ValueError, match="walkers must be an integer >= 1"):
        explore(Calculator(fitted_ensemble), lattice, walkers=0)
