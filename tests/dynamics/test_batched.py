"""Batched exploration engine against independent references: equipartition for Langevin, ASE's
VelocityVerlet for NVE, the ASE calculator for biased forces walker by walker, a run without
the stopped walker for "a walker stops alone", and ase.io for the files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.io import read
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from uq_bias import GenericAdapter, keys
from uq_bias.bias import BiasConfig, RelativeStrength
from uq_bias.calculator import Calculator
from uq_bias.dynamics import (
    ExploreConfig,
    WatchdogConfig,
    explore,
    langevin,
    run_batched,
    walker_specs,
)
from uq_bias.dynamics.batched import BatchedForces
from uq_bias.graph import edge_vectors
from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

QUIET = WatchdogConfig(min_distance=None, max_force=None)


class MorseFeatures(torch.nn.Module):
    """Morse pair energy E_i = (D/2) sum_j f_c(r_ij) (e^{-2a(r_ij - r0)} - 2 e^{-a(r_ij - r0)})
    (D = 0.3 eV, a = 1.4 1/A, r0 = 2.55 A, cosine cutoff 5 A) written as a readout over eight
    radial features (the last six, Gaussians, with weight 0), so that the gradient-feature
    uncertainty has something to measure."""

    def __init__(self, cutoff: float = 5.0):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("mu", torch.linspace(2.0, 4.5, 6, dtype=torch.float64))
        self.readout = torch.nn.Linear(8, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.readout.weight.zero_()
            self.readout.weight[0, :2] = 0.15

    def forward(self, graph):
        r = edge_vectors(graph).norm(dim=1)
        cut = 0.5 * (torch.cos(torch.pi * r / self.cutoff) + 1)
        x = torch.exp(-1.4 * (r - 2.55))
        basis = torch.cat(
            [torch.stack([x * x, -2 * x], 1), torch.exp(-4 * (r[:, None] - self.mu) ** 2)], 1
        )
        features = r.new_zeros(graph.n_atoms, 8).index_add(
            0, graph.edge_index[1], basis * cut[:, None]
        )
        return self.readout(features).squeeze(-1)


def _cell(seed: int, a: float = 3.6) -> Atoms:
    atoms = bulk("Cu", "fcc", a=a, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=seed)
    return atoms


def _cluster(seed: int) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.pbc, atoms.cell = False, None
    atoms.rattle(0.05, seed=seed)
    return atoms


def _edges(model, frames) -> int:
    return sum(model.graph(a).edge_index.shape[1] for a in frames)


@pytest.fixture(scope="module")
def morse():
    return GenericAdapter(MorseFeatures(), "readout", cutoff=5.0, atomic_numbers=[29])


@pytest.fixture(scope="module")
def morse_uq(morse):
    """Gradient-feature uncertainty of the Morse model, conditioned on rattled fcc cells."""
    return GradientFeatureUncertainty(morse).fit([_cell(s) for s in range(3)])


def test_langevin_reaches_the_set_temperature(morse):
    """Equipartition: <K> = (3N/2) kT per walker (no constraints, the thermostat acts on all
    3N momenta). Each of W independent walkers gives one time average; their mean must be
    within 3 standard errors (spread over walkers / sqrt(W)) of the set temperature."""
    temperature, walkers, steps, burn, every = 600.0, 8, 600, 25, 4
    config = dict(steps=steps, timestep=1.0, temperature=temperature, friction=0.1)
    runs = explore(
        Calculator(morse),
        [_cell(k) for k in range(walkers)],
        ExploreConfig(**config, sample_every=every, watchdog=QUIET, progress=False),
        walkers=walkers,
        engine="batched",
    )
    assert runs.stop_reasons == ["completed"] * walkers
    averages = []
    for walker in runs.walkers:
        kinetic = [a.get_kinetic_energy() for a in walker.frames[burn:]]
        averages.append(np.mean(kinetic) / (1.5 * len(walker.frames[0]) * units.kB))
    mean, error = np.mean(averages), np.std(averages, ddof=1) / np.sqrt(walkers)
    assert abs(mean - temperature) < 3 * error, (mean, error)
    assert error < 0.03 * temperature  # the run is long enough to say something


def test_without_friction_it_is_ase_velocity_verlet(morse):
    """gamma = 0: the batched BAOAB step on the batched forces follows ASE's VelocityVerlet
    (same model, same start) walker by walker, and conserves E + K as well."""
    starts = [_cell(1), _cluster(2), _cell(3)]
    dt, steps = 2.0 * units.fs, 40
    frames = []
    for k, atoms in enumerate(starts):
        atoms = atoms.copy()
        thermalize_momenta(atoms, 300, rng=np.random.default_rng(k))
        Stationary(atoms)
        frames.append(atoms)
    forces_of = BatchedForces(morse, None, [len(a) for a in frames])
    r = torch.tensor(np.concatenate([a.positions for a in frames]))
    p = torch.tensor(np.concatenate([a.get_momenta() for a in frames]))
    m = torch.tensor(np.concatenate([a.get_masses() for a in frames]))
    counts = [len(a) for a in frames]
    batch = torch.repeat_interleave(torch.arange(len(frames)), torch.tensor(counts))
    current = [a.copy() for a in frames]

    def evaluate(r):
        for atoms, part in zip(current, torch.split(r, counts)):
            atoms.positions = part.numpy()
        forces, results = forces_of(current)
        return forces, np.array([res[keys.ENERGY] for res in results])

    f, energy = evaluate(r)
    totals = [energy + langevin.kinetic_energy(p, m, batch, len(frames)).numpy()]
    for _ in range(steps):
        r, p = langevin.baoa(r, p, f, m, torch.zeros_like(p), dt=dt, friction=0.0, kT=0.0)
        f, energy = evaluate(r)
        p = langevin.half_kick(p, f, dt)
        totals.append(energy + langevin.kinetic_energy(p, m, batch, len(frames)).numpy())
    ours = np.ptp(np.array(totals), axis=0)
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = Calculator(morse)
        reference = []
        for _ in VelocityVerlet(atoms, timestep=dt).irun(steps):
            reference.append(atoms.get_total_energy())
        np.testing.assert_allclose(torch.split(r, counts)[k].numpy(), atoms.positions, atol=1e-9)
        assert ours[k] <= 1.01 * np.ptp(reference) + 1e-9
    assert ours.max() > 1e-6  # the run moved: a spread to compare


@pytest.mark.parametrize(
    "bias",
    [
        BiasConfig(tau=2.0),
        BiasConfig(tau_rel=0.5, window=3),
        BiasConfig(tau_rel=0.5, window=4, split=False, split_every=2),
        BiasConfig(tau_rel=0.5, window=3, fade=[0.0, 2e-4]),
    ],
    ids=["absolute", "relative", "relative-split-every-2", "relative-fade"],
)
@pytest.mark.parametrize("chunks", [False, True], ids=["one-call", "chunks"])
def test_batched_biased_forces_equal_the_ase_calculator(morse_uq, bias, chunks):
    """Every walker (two cells and a cluster in one batch, each with its own tau_rel window,
    walker 0's seeded from a saved state): the forces the batched engine used at every step
    equal a fresh uq_bias.Calculator's biased forces on that walker's own configurations, in
    order, to 1e-10; the windows handed back equal the calculators' windows."""
    starts = [_cell(5), _cluster(6), _cell(7, a=3.5)]
    limit = _edges(morse_uq, starts[:2]) if chunks else None  # chunks (0, 1), (2)
    config = ExploreConfig(
        steps=8, sample_every=1, watchdog=QUIET, progress=False, seed=3, batch_edges=limit
    )
    seeded = {"forces": [0.4, 0.6], "bias": [0.01, 0.03]} if bias.tau_rel else None
    specs = walker_specs(
        Calculator(morse_uq, bias=bias), starts, config, walkers=3, bias_states=[seeded, None, None]
    )
    runs = run_batched(morse_uq, bias, specs)
    taus = []
    for walker, spec in zip(runs, specs):
        assert len(walker.frames) == config.steps
        reference = Calculator(morse_uq, bias=bias)
        if spec.bias_state is not None:
            relative = reference.bias.relative
            reference.bias.relative = RelativeStrength.from_state(
                spec.bias_state, relative.tau_rel, relative.window
            )
        reference.calculate(spec.start.copy(), ["forces"])  # step 0: the window's first entry
        for frame in walker.frames:
            reference.calculate(frame.copy(), ["forces"])
            np.testing.assert_allclose(
                frame.arrays["model_forces"], reference.results[keys.FORCES], atol=1e-10
            )
            for name in (keys.ENERGY_UNCERTAINTY, keys.BIAS_STRENGTH):
                np.testing.assert_allclose(frame.info[name], reference.results[name], rtol=1e-10)
            taus.append(frame.info[keys.BIAS_STRENGTH])
        assert ("model_stress" in walker.frames[0].info) == bool(spec.start.pbc.all())
        if bias.tau_rel:
            for name, values in reference.bias.relative.state().items():
                np.testing.assert_allclose(walker.bias_state[name], values, rtol=1e-12)
    assert max(taus) > 0
    if seeded:
        assert runs[0].frames[0].info[keys.BIAS_STRENGTH] > 0  # the seeded window acts at once


@pytest.mark.parametrize("chunks", [False, True], ids=["one-call", "chunks"])
def test_a_stopped_walker_stops_alone(morse_uq, tmp_path, chunks):
    """Walker 1 (a compressed cell, far from the training cells) trips the uncertainty
    threshold mid-run; walkers 0 and 2 run to the end along exactly the trajectories they
    follow when walker 1 is not stopped (per-walker random streams and bias windows); files
    read back with ase.io."""
    starts = [_cell(8), _cell(9, a=3.35), _cell(10)]
    calc = Calculator(morse_uq, bias=BiasConfig(tau_rel=0.3, window=2))
    limit = _edges(morse_uq, starts[:2]) if chunks else None  # chunks (0, 1), (2)
    config = ExploreConfig(
        steps=10, sample_every=1, watchdog=QUIET, progress=False, seed=5, batch_edges=limit
    )
    probe = explore(calc, starts, config, walkers=3, engine="batched")
    u = [
        np.array([f.arrays[keys.FORCES_UNCERTAINTY].max() for f in w.frames]) for w in probe.walkers
    ]
    others = max(u[0].max(), u[2].max())
    assert u[1][2:].max() > others, "walker 1 must reach beyond the others' uncertainty"
    threshold = max(others, u[1][:2].max()) * (1 + 1e-9)  # crossed at step 3 or later
    expected_step = int(np.argmax(u[1] > threshold)) + 1
    watchdog = WatchdogConfig(max_uncertainty=threshold, min_distance=None, max_force=None)
    config = replace(config, watchdog=watchdog)
    trajectory = tmp_path / "traj.extxyz"
    runs = explore(calc, starts, config, walkers=3, engine="batched", trajectory=trajectory)
    assert runs.stop_reasons == ["completed", "uncertainty", "completed"]
    assert runs.walkers[1].stop_step == expected_step >= 3
    for k in (0, 2):
        for ours, alone in zip(runs.walkers[k].frames, probe.walkers[k].frames, strict=True):
            np.testing.assert_allclose(ours.positions, alone.positions, atol=1e-10)
    for k, walker in enumerate(runs.walkers):
        back = read(tmp_path / f"traj_w{k}.extxyz", ":")
        assert [f.info["step"] for f in back] == [f.info["step"] for f in walker.frames]
        np.testing.assert_allclose(back[-1].positions, walker.frames[-1].positions, atol=1e-6)
        np.testing.assert_allclose(
            back[-1].arrays[keys.FORCES_UNCERTAINTY],
            walker.frames[-1].arrays[keys.FORCES_UNCERTAINTY],
            atol=1e-7,
        )
    assert back[-1].info["walker"] == 2


def test_a_blown_up_walker_starts_again_in_a_next_batch(morse_uq):
    """restarts 1: walker 1 (a compressed cell) comes closer than a min_distance limit the
    others stay above and starts again, alone, from its start for the steps it has left: its
    frames from there equal a one-walker batch run by hand from that start with the stream
    (seed, 1, 1) and steps counted on from the stop; walkers 0 and 2 follow the trajectories
    of a run without the limit."""
    from uq_bias.dynamics.watchdog import min_pair_distance

    starts = [_cell(8), _cell(9, a=3.35), _cell(10)]
    bias = BiasConfig(tau_rel=0.3, window=2)
    calc = Calculator(morse_uq, bias=bias)
    config = ExploreConfig(
        steps=30, timestep=2.0, sample_every=1, watchdog=QUIET, progress=False, seed=5
    )
    probe = explore(calc, starts, config, walkers=3, engine="batched")
    d = [np.array([min_pair_distance(a, 3.0) for a in w.frames]) for w in probe.walkers]
    d0 = [min_pair_distance(a, 3.0) for a in starts]
    limit = min(d[0].min(), d[2].min(), d0[0], d0[2], d[1][:2].min(), d0[1]) * (1 - 1e-9)
    assert d[1][2:].min() < limit, "walker 1 must pass the limit at step 3 or later"
    watchdog = WatchdogConfig(min_distance=limit, max_force=None)
    config = replace(config, watchdog=watchdog, restarts=1)
    runs = explore(calc, starts, config, walkers=3, engine="batched")
    first = int(np.argmax(d[1] < limit)) + 1
    assert [r["reason"] for r in runs.walkers[1].restarts] == ["min_distance"]
    assert runs.walkers[1].restarts[0]["step"] == first
    for k in (0, 2):
        assert runs.walkers[k].restarts == [] and runs.walkers[k].stop_reason == "completed"
        for ours, alone in zip(runs.walkers[k].frames, probe.walkers[k].frames, strict=True):
            np.testing.assert_allclose(ours.positions, alone.positions, atol=1e-10)

    spec = walker_specs(calc, starts, replace(config, restarts=0), walkers=3)[1]
    by_hand = run_batched(morse_uq, bias, [replace(spec, segment=1, first_step=first)])[0]
    again = [a for a in runs.walkers[1].frames if a.info["step"] > first]
    assert [a.info["step"] for a in again] == [a.info["step"] for a in by_hand.frames]
    assert again and again[0].info["step"] == first + 1
    for ours, reference in zip(again, by_hand.frames, strict=True):
        np.testing.assert_allclose(ours.positions, reference.positions, atol=1e-10)
    assert (runs.walkers[1].stop_reason, runs.walkers[1].stop_step) == (
        by_hand.stop_reason,
        by_hand.stop_step,
    )


def test_batched_engine_bad_input(morse_uq):
    with pytest.raises(ValueError, match="engine 'gpu' not in"):
        ExploreConfig(engine="gpu")
    with pytest.raises(ValueError, match="device: 'gpu0' is not one of"):
        ExploreConfig(device="gpu0")
    from ase.calculators.emt import EMT

    with pytest.raises(TypeError, match="engine='batched'.*uq_bias.Calculator"):
        explore(EMT(), _cell(1), steps=2, engine="batched", progress=False)
