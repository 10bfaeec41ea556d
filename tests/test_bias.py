"""Biased energy, forces and stress: finite differences, closed form vs autograd, weights, tau_rel,
NVE conservation, bad input. Models: real tiny MACE ensembles (and the gradient-feature model
when present)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from uq_bias import keys
from uq_bias.bias import (
    BiasConfig,
    RelativeStrength,
    ensemble_uncertainty_gradient,
    uncertainty_gradients,
)
from uq_bias.calculator import Calculator


@pytest.fixture
def cu8():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.numbers[[1, 6]] = 13
    atoms.rattle(0.08, seed=7)
    return atoms


@pytest.fixture(params=["ensemble", "gradient"])
def uq_model(request):
    """Each kind of uncertainty model: a deep ensemble and a gradient-feature posterior."""
    name = "untrained_ensemble" if request.param == "ensemble" else "gradient_model"
    return request.getfixturevalue(name)


def _system(name, cu8, methanol):
    return cu8.copy() if name == "cell" else methanol.copy()


@pytest.mark.parametrize("weights", [{}, {"H": 0.5, "C": 0.5, "O": 0.5, "Al": 0.5, "Cu": 0.5}])
@pytest.mark.parametrize("system", ["cell", "molecule"])
def test_biased_forces_and_stress_are_gradients_of_biased_energy(
    uq_model, cu8, methanol, system, weights
):
    """F_b = -dE_b/dr and sigma_b = (1/V) dE_b/deps against ASE's finite differences."""
    atoms = _system(system, cu8, methanol)
    calc = Calculator(uq_model, bias=BiasConfig(tau=3.0, weights=weights))
    atoms.calc = calc
    forces = atoms.get_forces()
    assert np.abs(calc.results[keys.BIAS_FORCES]).max() > 1e-4  # the bias is really there
    some = [0, 2, 5]
    numerical = calculate_numerical_forces(atoms, eps=1e-4, iatoms=some)
    np.testing.assert_allclose(forces[some], numerical, atol=1e-7)
    if system == "cell":
        stress = atoms.get_stress()
        assert np.abs(calc.results[keys.BIAS_STRESS]).max() > 1e-6
        np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-8)
    else:
        assert keys.STRESS not in calc.results


def test_bias_terms_add_up(uq_model, cu8):
    """E_b = E - tau U, F_b = F + F_bias, per-atom energies sum to E_b; unbiased = plain calc."""
    tau = 2.0
    atoms = cu8.copy()
    atoms.calc = Calculator(uq_model, bias=BiasConfig(tau=tau))
    atoms.get_forces()
    r = atoms.calc.results
    plain = cu8.copy()
    plain.calc = Calculator(uq_model)
    plain.get_forces()
    p = plain.calc.results
    np.testing.assert_allclose(r[keys.UNBIASED_ENERGY], p[keys.ENERGY], rtol=1e-13)
    np.testing.assert_allclose(r[keys.UNBIASED_FORCES], p[keys.FORCES], atol=1e-13)
    np.testing.assert_allclose(r[keys.UNBIASED_STRESS], p[keys.STRESS], atol=1e-13)
    np.testing.assert_allclose(r[keys.BIAS_ENERGY], -tau * p[keys.ENERGY_UNCERTAINTY], rtol=1e-12)
    np.testing.assert_allclose(r[keys.ENERGY], r[keys.UNBIASED_ENERGY] + r[keys.BIAS_ENERGY])
    np.testing.assert_allclose(r[keys.FORCES], r[keys.UNBIASED_FORCES] + r[keys.BIAS_FORCES])
    np.testing.assert_allclose(r[keys.STRESS], r[keys.UNBIASED_STRESS] + r[keys.BIAS_STRESS])
    np.testing.assert_allclose(r[keys.ENERGIES].sum(), r[keys.ENERGY], rtol=1e-12)
    assert r[keys.BIAS_STRENGTH] == tau
    assert r[keys.FREE_ENERGY] == r[keys.ENERGY]


@pytest.mark.parametrize("system", ["cell", "molecule"])
def test_tau_zero_gives_exactly_the_plain_results(uq_model, cu8, methanol, system):
    atoms = _system(system, cu8, methanol)
    atoms.calc = Calculator(uq_model, bias=BiasConfig(tau=0.0))
    atoms.get_forces()
    plain = atoms.copy()
    plain.calc = Calculator(uq_model)
    plain.get_forces()
    names = [keys.ENERGY, keys.FORCES, keys.ENERGIES, keys.STRESS, keys.FORCES_UNCERTAINTY]
    for name in names:
        if name in plain.calc.results:
            np.testing.assert_array_equal(atoms.calc.results[name], plain.calc.results[name])
    assert not np.any(atoms.calc.results[keys.BIAS_FORCES])


def test_weight_zero_means_no_bias_force(uq_model, methanol):
    """No bias on hydrogen: its biased forces are its unbiased forces; the others feel the bias."""
    methanol.calc = Calculator(uq_model, bias=BiasConfig(tau=5.0, weights={"H": 0.0}))
    methanol.get_forces()
    r = methanol.calc.results
    hydrogen = methanol.numbers == 1
    assert np.all(r[keys.BIAS_FORCES][hydrogen] == 0.0)
    np.testing.assert_array_equal(r[keys.FORCES][hydrogen], r[keys.UNBIASED_FORCES][hydrogen])
    assert np.abs(r[keys.BIAS_FORCES][~hydrogen]).min() > 0
    # the heavy atoms get the full bias force of an unweighted run
    full = methanol.copy()
    full.calc = Calculator(uq_model, bias=BiasConfig(tau=5.0))
    full.get_forces()
    np.testing.assert_allclose(
        r[keys.BIAS_FORCES][~hydrogen], full.calc.results[keys.BIAS_FORCES][~hydrogen], atol=1e-12
    )


def test_closed_form_ensemble_gradient_matches_autograd(untrained_ensemble, cu8):
    """-dU/dr = U sum_k dE_k F_k / sum_k dE_k^2 against a batched autograd pass."""
    graph = untrained_ensemble.graph(cu8).requires_grad_(positions=True, strain=True)
    out = untrained_ensemble(graph, forces=True, stress=True)
    m = out.members
    du_dr, du_deps = ensemble_uncertainty_gradient(
        out.energy_uncertainty,
        m[keys.MEMBERS_ENERGY],
        m[keys.MEMBERS_FORCES],
        graph.batch,
        m[keys.MEMBERS_STRESS],
    )
    du_dr_ad, du_deps_ad = uncertainty_gradients(out.energy_uncertainty, graph, stress=True)
    torch.testing.assert_close(du_dr, du_dr_ad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(du_deps, du_deps_ad, rtol=1e-9, atol=1e-12)


def test_uncertainty_gradient_matches_finite_differences(gradient_model, cu8):
    """dU/dr by one backward pass against central differences of U; the forces the model
    returns are those of a plain calculator."""
    graph = gradient_model.graph(cu8).requires_grad_(positions=True, strain=True)
    out = gradient_model(graph, forces=True, stress=True)
    du_dr, _ = uncertainty_gradients(out.energy_uncertainty, graph, stress=True)
    h = 1e-5
    for atom, axis in ((0, 0), (3, 2)):
        values = []
        for sign in (1, -1):
            moved = cu8.copy()
            moved.positions[atom, axis] += sign * h
            u = gradient_model(gradient_model.graph(moved)).energy_uncertainty
            values.append(float(u.detach()))
        fd = (values[0] - values[1]) / (2 * h)
        assert float(du_dr[atom, axis]) == pytest.approx(fd, rel=1e-5)
    plain = cu8.copy()
    plain.calc = Calculator(gradient_model)
    np.testing.assert_allclose(out.forces.detach().numpy(), plain.get_forces(), atol=1e-12)


@pytest.mark.parametrize("system", ["cell", "molecule"])
def test_single_pass_gives_the_same_biased_results(uq_model, cu8, methanol, system):
    """split=False: the biased energy, forces and stress from one backward over E_b equal the
    split ones; the split-only results are absent."""
    results = []
    for split in (True, False):
        atoms = _system(system, cu8, methanol)
        atoms.calc = Calculator(uq_model, bias=BiasConfig(tau=2.0, split=split))
        atoms.get_forces()
        results.append(atoms.calc.results)
    names = [keys.ENERGY, keys.FORCES, keys.ENERGIES, keys.BIAS_ENERGY, keys.UNBIASED_ENERGY]
    for name in names + ([keys.STRESS] if system == "cell" else []):
        np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-10, atol=1e-12)
    if "members_energy" not in results[1]:  # ensembles split for free in closed form
        assert keys.UNBIASED_FORCES not in results[1] and keys.BIAS_FORCES not in results[1]


def test_calculator_closed_form_and_autograd_agree(untrained_ensemble, cu8):
    results = {}
    for mode in ("closed_form", "autograd"):
        atoms = cu8.copy()
        atoms.calc = Calculator(untrained_ensemble, bias=BiasConfig(tau=2.0, gradient=mode))
        atoms.get_stress()
        results[mode] = atoms.calc.results
    for name in (keys.FORCES, keys.STRESS, keys.BIAS_FORCES, keys.BIAS_STRESS, keys.ENERGY):
        np.testing.assert_allclose(
            results["closed_form"][name], results["autograd"][name], atol=1e-11
        )


def test_relative_strength_follows_the_window(untrained_ensemble, cu8):
    """tau = 0 for the first `window` configurations, then tau_rel <|F|> / <|dU/dr|> over the
    previous window, with |dU/dr| from a separate tau=1 calculator; repeated positions do not
    advance the window."""
    window, tau_rel = 3, 0.2
    calc = Calculator(untrained_ensemble, bias=BiasConfig(tau_rel=tau_rel, window=window))
    unit = Calculator(untrained_ensemble, bias=BiasConfig(tau=1.0))
    rng = np.random.default_rng(0)
    f_means, b_means, taus = [], [], []
    atoms = cu8.copy()
    for _ in range(window + 2):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        atoms.calc = calc
        atoms.get_forces()
        taus.append(calc.results[keys.BIAS_STRENGTH])
        calc.calculate(atoms.copy(), ["energy"])  # a second call at the same positions
        assert calc.results[keys.BIAS_STRENGTH] == taus[-1]
        probe = atoms.copy()
        probe.calc = unit
        probe.get_forces()
        f_means.append(np.linalg.norm(unit.results[keys.UNBIASED_FORCES], axis=1).mean())
        b_means.append(np.linalg.norm(unit.results[keys.BIAS_FORCES], axis=1).mean())
    assert taus[:window] == [0.0] * window
    for step in range(window, window + 2):
        expected = (
            tau_rel
            * np.mean(f_means[step - window : step])
            / np.mean(b_means[step - window : step])
        )
        np.testing.assert_allclose(taus[step], expected, rtol=1e-10)
    assert len(calc.bias.relative.forces) == window


@pytest.mark.parametrize(
    "model_name, measured_every, atol",
    [("gradient_model", 2, 1e-10), ("untrained_ensemble", 1, 1e-8)],
)
def test_relative_window_without_split(request, methanol, model_name, measured_every, atol):
    """tau_rel with split=False, split_every=m = 2: for a gradient-feature model the window
    takes configurations 1, 1+m, ...; between them one pass over E_b = E - tau U gives
    F + tau dU/dr. An ensemble's forces are its members' mean, so it takes both passes on every
    step and every configuration enters the window (before, it still kept window / m of them:
    tau followed the forces m times too soon). F, dU/dr and the means come from a separate
    calculator at tau = 1 (the reference)."""
    model = request.getfixturevalue(model_name)
    tau_rel, window, every, steps = 0.3, 4, 2, 9
    bias = BiasConfig(tau_rel=tau_rel, window=window, split=False, split_every=every)
    calc = Calculator(model, bias=bias)
    unit = Calculator(model, bias=BiasConfig(tau=1.0))
    rng = np.random.default_rng(1)
    atoms, measured, samples = methanol.copy(), [], window // measured_every
    for step in range(steps):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        probe = atoms.copy()
        probe.calc = unit
        probe.get_forces()
        forces, du_dr = unit.results[keys.UNBIASED_FORCES], unit.results[keys.BIAS_FORCES]
        tau = 0.0
        if len(measured) >= samples:
            recent = np.array(measured[-samples:])
            tau = tau_rel * recent[:, 0].mean() / recent[:, 1].mean()
        atoms.calc = calc
        np.testing.assert_allclose(atoms.get_forces(), forces + tau * du_dr, atol=atol)
        measuring = step % measured_every == 0
        assert (keys.UNBIASED_FORCES in calc.results) == measuring
        if measuring:
            norms = np.linalg.norm(forces, axis=1).mean(), np.linalg.norm(du_dr, axis=1).mean()
            measured.append(norms)
    assert tau > 0  # the window filled


def test_relative_strength_state_is_per_object():
    a, b = RelativeStrength(0.1, window=1), RelativeStrength(0.1, window=1)
    assert a.tau(b"x", 1.0, 2.0) == 0.0
    assert a.tau(b"y", 3.0, 3.0) == pytest.approx(0.1 * 1.0 / 2.0)
    assert b.tau(b"x", 1.0, 1.0) == 0.0  # untouched by a


def test_seeded_strength_follows_the_sliding_window_from_the_first_call():
    """After seed(F0, B0) the window holds W copies of (F0, B0): tau at call n is tau_rel times
    the mean of the last W forces over the mean of the last W bias means (brute force)."""
    tau_rel, window, f0, b0 = 0.2, 3, 2.0, 0.5
    strength = RelativeStrength(tau_rel, window)
    strength.seed(f0, b0)
    samples = [(1.0, 0.25), (4.0, 1.0), (3.0, 2.0), (0.5, 0.1)]
    history = [(f0, b0)] * window
    for n, (f, b) in enumerate(samples):
        last = np.array(history[-window:])
        expected = tau_rel * last[:, 0].mean() / last[:, 1].mean()
        assert strength.tau(bytes([n]), f, b) == pytest.approx(expected, rel=1e-12)
        history.append((f, b))
    assert strength.current() > 0


def test_saved_window_continues_where_it_stopped():
    """A strength restored from state() gives the taus the uninterrupted one gives; a window
    grown since is topped up with the saved means, one shrunk keeps the latest samples."""
    rng = np.random.default_rng(0)
    samples = rng.uniform(0.1, 2.0, size=(12, 2))
    a = RelativeStrength(0.1, window=4)
    for n, (f, b) in enumerate(samples[:6]):
        a.tau(bytes([n]), f, b)
    saved = json.loads(json.dumps(a.state()))  # it must survive JSON
    b_ = RelativeStrength.from_state(saved, 0.1, window=4)
    for n, (f, b) in enumerate(samples[6:], start=6):
        assert b_.tau(bytes([n]), f, b) == a.tau(bytes([n]), f, b)
    grown = RelativeStrength.from_state(saved, 0.1, window=6)
    kept = samples[2:6]
    padded_f = np.r_[[kept[:, 0].mean()] * 2, kept[:, 0]]
    padded_b = np.r_[[kept[:, 1].mean()] * 2, kept[:, 1]]
    assert grown.current() == pytest.approx(0.1 * padded_f.mean() / padded_b.mean())
    shrunk = RelativeStrength.from_state(saved, 0.1, window=2)
    assert shrunk.current() == pytest.approx(0.1 * kept[2:, 0].mean() / kept[2:, 1].mean())
    with pytest.raises(ValueError, match="'forces' and 'bias'"):
        RelativeStrength.from_state({"forces": [1.0]}, 0.1)
    with pytest.raises(ValueError, match="bias_mean must be a finite number"):
        RelativeStrength(0.1).seed(1.0, float("nan"))


def test_seeded_walker_is_biased_from_its_first_step(fitted_ensemble, cu8_frames):
    """A walker given a window estimated from labelled frames (no MD) has tau > 0 at step 1,
    from tau_rel <|F|> / <|dU/dr|> over those frames (each recomputed here, one frame at a
    time, with the unit-tau calculator), and hands its window back for the next walker."""
    from uq_bias.bias import estimate_window
    from uq_bias.dynamics import ExploreConfig, run_walker, walker_specs

    tau_rel = 0.3
    config = BiasConfig(tau_rel=tau_rel, window=50)
    f_means, b_means = [], []
    for atoms in cu8_frames[:3]:
        probe = atoms.copy()
        probe.calc = Calculator(fitted_ensemble, bias=BiasConfig(tau=1.0))
        probe.get_forces()
        f_means.append(np.linalg.norm(probe.calc.results[keys.UNBIASED_FORCES], axis=1).mean())
        b_means.append(np.linalg.norm(probe.calc.results[keys.BIAS_FORCES], axis=1).mean())
    force_mean, bias_mean = estimate_window(fitted_ensemble, cu8_frames[:3], config)
    np.testing.assert_allclose([force_mean, bias_mean], [np.mean(f_means), np.mean(b_means)])
    seeded = RelativeStrength(tau_rel, config.window)
    seeded.seed(force_mean, bias_mean)
    explore = ExploreConfig(steps=3, sample_every=1, temperature=300, progress=False)
    calc = Calculator(fitted_ensemble, bias=config)
    fresh, warm = walker_specs(
        calc, cu8_frames[0], explore, walkers=2, bias_states=[None, seeded.state()]
    )
    taus = [[f.info[keys.BIAS_STRENGTH] for f in run_walker(s).frames] for s in (fresh, warm)]
    assert taus[0] == [0.0, 0.0, 0.0]  # unseeded: unbiased until the window is full
    # step 1 sees the seeded window with the start frame (cu8_frames[0]) pushed in at step 0
    w = config.window
    forces_sum = (w - 1) * np.mean(f_means) + f_means[0]
    bias_sum = (w - 1) * np.mean(b_means) + b_means[0]
    assert taus[1][0] == pytest.approx(tau_rel * forces_sum / bias_sum, rel=1e-9)
    assert all(t > 0 for t in taus[1])
    result = run_walker(warm)
    assert len(result.bias_state["forces"]) == config.window


def _nve_energy_spread(calc, start, steps=40):
    atoms = start.copy()
    thermalize_momenta(atoms, 300, rng=np.random.default_rng(3))
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    totals = []
    for _ in dyn.irun(steps):
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
    totals = np.array(totals)
    return np.abs(totals - totals[0]).max(), atoms.calc.results[keys.BIAS_ENERGY]


@pytest.mark.parametrize("kind", ["fitted_ensemble", "fitted_gradient_model"])
def test_biased_nve_conserves_the_biased_energy(request, kind, cu8_frames):
    """At fixed tau, velocity Verlet conserves E_b + K about as well as E + K without bias."""
    model = request.getfixturevalue(kind)
    start = cu8_frames[0]
    probe = start.copy()
    probe.calc = Calculator(model)
    probe.get_potential_energy()
    tau = 0.1 / probe.calc.results[keys.ENERGY_UNCERTAINTY]  # a bias of ~0.1 eV
    plain, _ = _nve_energy_spread(Calculator(model, bias=BiasConfig(tau=0.0)), start)
    biased, bias_energy = _nve_energy_spread(Calculator(model, bias=BiasConfig(tau=tau)), start)
    assert abs(bias_energy) > 10 * max(plain, 1e-4)  # the bias is large compared to the drift
    assert biased <= 2 * plain + 2e-3


def test_bad_input_is_a_clear_error(tiny_mace, untrained_ensemble):
    from uq_bias.models.mace import MACEAdapter

    with pytest.raises(TypeError, match="needs a model with uncertainty"):
        Calculator(MACEAdapter(tiny_mace), bias=BiasConfig(tau=1.0))
    with pytest.raises(ValueError, match="unknown element 'Xx'"):
        BiasConfig(tau=1.0, weights={"Xx": 0.0})
    with pytest.raises(ValueError, match="'Fe' is not known to the model"):
        Calculator(untrained_ensemble, bias=BiasConfig(tau=1.0, weights={"Fe": 0.0}))
    with pytest.raises(ValueError, match="exactly one of tau"):
        BiasConfig(tau=1.0, tau_rel=0.1)
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        BiasConfig(tau=-1.0)
    with pytest.raises(ValueError, match=r"weights\['H'\]"):
        BiasConfig(tau=1.0, weights={"H": -1.0})
    with pytest.raises(ValueError, match="unknown gradient"):
        BiasConfig(tau=1.0, gradient="magic")
    with pytest.raises(ValueError, match="split=False.*all equal"):
        Calculator(untrained_ensemble, bias=BiasConfig(tau=1.0, weights={"H": 0.0}, split=False))
    with pytest.raises(ValueError, match="split_every must be an integer >= 1"):
        BiasConfig(tau_rel=0.1, split=False, split_every=0)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        BiasConfig(tau_rel=0.1, window=0)


def test_closed_form_needs_an_ensemble(gradient_model, cu8):
    cu8.calc = Calculator(gradient_model, bias=BiasConfig(tau=1.0, gradient="closed_form"))
    with pytest.raises(ValueError, match="needs an ensemble"):
        cu8.get_forces()


@pytest.mark.parametrize("split", [True, False])
def test_fade_scales_the_bias_by_the_energy_rise(gradient_model, methanol, split):
    """With fade [a, b] the bias terms are s(dE) times those of the same tau without fade:
    dE the unbiased energy per atom above the lowest seen so far (from the unfaded
    calculator), s the half cosine written out here. The rise is forced by stretching a bond."""
    tau, stretches = 0.7, (0.3, 0.2, 0.15, 0.1, 0.05, 0.0, 0.3)
    full = Calculator(gradient_model, bias=BiasConfig(tau=tau))
    frames, runs = [], []
    for stretch in stretches:
        atoms = methanol.copy()
        atoms.positions[1] = methanol.positions[1] * (1 + stretch)
        atoms.calc = full
        atoms.get_forces()
        frames.append(atoms)
        runs.append(dict(full.results))
    per_atom = np.array([r[keys.UNBIASED_ENERGY] / len(methanol) for r in runs])
    rise = per_atom - np.minimum.accumulate(per_atom)
    a, b = 0.2 * rise.max(), 0.8 * rise.max()  # the stretches span full strength and the fade
    s = 0.5 * (1 + np.cos(np.pi * np.clip((rise - a) / (b - a), 0.0, 1.0)))
    assert s.min() < 0.1 and s.max() == 1.0 and ((s > 0.1) & (s < 0.9)).any()
    faded = Calculator(gradient_model, bias=BiasConfig(tau=tau, fade=[a, b], split=split))
    for atoms, r, s_k in zip(frames, runs, s):
        atoms.calc = faded
        energy = r[keys.UNBIASED_ENERGY] - s_k * tau * r[keys.ENERGY_UNCERTAINTY]
        np.testing.assert_allclose(atoms.get_potential_energy(), energy, rtol=1e-9)
        expected = r[keys.UNBIASED_FORCES] + s_k * r[keys.BIAS_FORCES]
        np.testing.assert_allclose(atoms.get_forces(), expected, rtol=1e-7, atol=1e-9)
        assert faded.results[keys.BIAS_STRENGTH] == pytest.approx(s_k * tau, rel=1e-9)


@pytest.mark.parametrize("fade", [[0.1], [0.2, 0.1], [-0.1, 0.1], [0.0, float("nan")]])
def test_a_bad_fade_is_refused(fade):
    with pytest.raises(ValueError, match="fade must be \\[a, b\\] with 0 <= a < b"):
        BiasConfig(tau_rel=0.2, fade=fade)


def test_torsional_projection_keeps_the_bias_work_along_a_dihedral(gradient_model, methanol):
    """project='torsions': the bias force does no work on any bond length or angle (finite
    differences of ASE distances along it), and along the turn of the O-H about C-O it does the
    same work as the full bias force."""
    from tests.test_bonds import torsion_motion
    from uq_bias.bonds import BondGraph

    tau = 0.5
    projected = Calculator(gradient_model, bias=BiasConfig(tau=tau, project="torsions"))
    full = Calculator(gradient_model, bias=BiasConfig(tau=tau, project="none"))
    atoms = methanol.copy()
    atoms.calc = projected
    atoms.get_forces()
    f_proj = projected.results[keys.BIAS_FORCES]
    atoms.calc = full
    atoms.get_forces()
    f_full = full.results[keys.BIAS_FORCES]
    pairs = BondGraph.of(methanol).rigid_pairs()
    moved = methanol.copy()
    moved.positions += 1e-5 * f_proj / np.abs(f_proj).max()
    change = [moved.get_distance(a, b) - methanol.get_distance(a, b) for a, b in pairs]
    assert np.abs(change).max() < 1e-9
    c, o = [int(np.flatnonzero(methanol.numbers == z)[0]) for z in (6, 8)]
    turn = torsion_motion(methanol, c, o)
    assert np.abs(turn).max() > 0.1
    np.testing.assert_allclose(np.sum(f_proj * turn), np.sum(f_full * turn), rtol=1e-6)
    assert np.linalg.norm(f_proj) < 0.9 * np.linalg.norm(f_full)


def test_torsional_projection_refuses_crystals_and_single_pass(gradient_model, cu8):
    cu8.calc = Calculator(gradient_model, bias=BiasConfig(tau=0.5, project="torsions"))
    with pytest.raises(ValueError, match="is for molecules"):
        cu8.get_forces()
    with pytest.raises(ValueError, match="needs split=True"):
        BiasConfig(tau=0.5, project="torsions", split=False)
    with pytest.raises(ValueError, match="unknown project 'dihedrals'"):
        BiasConfig(tau=0.5, project="dihedrals")


def _frobenius(voigt: np.ndarray) -> float:
    """||sigma||_F of a symmetric 3x3 stress given in ASE's Voigt order (xx yy zz yz xz xy)."""
    xx, yy, zz, yz, xz, xy = voigt
    full = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return float(np.sqrt((full**2).sum()))


@pytest.mark.parametrize("tau_rel_stress", [0.5, 0.0])
def test_relative_stress_strength_follows_its_own_window(uq_model, cu8, tau_rel_stress):
    """tau_sigma = tau_rel_stress <||sigma||_F> / <||sigma_bias / tau_sigma||_F> over the previous
    `window` configurations (0 until full; 0 throughout with tau_rel_stress = 0), by hand from a
    separate unit-tau calculator's unbiased stress and bias stress; the biased stress is
    sigma + tau_sigma * (unit bias stress) while the forces keep the force strength tau."""
    window, tau_rel = 3, 0.2
    bias = BiasConfig(tau_rel=tau_rel, window=window, tau_rel_stress=tau_rel_stress)
    calc = Calculator(uq_model, bias=bias)
    unit = Calculator(uq_model, bias=BiasConfig(tau=1.0))
    rng = np.random.default_rng(2)
    atoms, samples = cu8.copy(), []
    for step in range(window + 3):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        strain = np.eye(3) + rng.normal(scale=0.005, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        probe = atoms.copy()
        probe.calc = unit
        probe.get_stress()
        u = unit.results
        atoms.calc = calc
        stress = atoms.get_stress()
        r = calc.results
        tau_sigma = 0.0
        if step >= window and tau_rel_stress > 0:
            last = np.array(samples[step - window : step])
            tau_sigma = tau_rel_stress * last[:, 0].mean() / last[:, 1].mean()
        samples.append((_frobenius(u[keys.UNBIASED_STRESS]), _frobenius(u[keys.BIAS_STRESS])))
        np.testing.assert_allclose(r[keys.BIAS_STRESS_STRENGTH], tau_sigma, rtol=1e-10, atol=0)
        expected = u[keys.UNBIASED_STRESS] + tau_sigma * u[keys.BIAS_STRESS]
        np.testing.assert_allclose(stress, expected, rtol=1e-9, atol=1e-13)
        tau = r[keys.BIAS_STRENGTH]
        expected_forces = u[keys.UNBIASED_FORCES] + tau * u[keys.BIAS_FORCES]
        np.testing.assert_allclose(atoms.get_forces(), expected_forces, atol=1e-10)
    assert tau > 0 and (tau_sigma > 0) == (tau_rel_stress > 0)
    assert (len(calc.bias.relative.stress) == window) == (tau_rel_stress > 0)


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_biased_stress_is_the_strain_derivative_of_the_biased_energy(uq_model, cu8, kind):
    """Without tau_rel_stress the bias stress has the force strength: sigma_b = (1/V) dE_b/deps
    by ASE's central finite differences of E_b on the periodic Cu/Al cell, for a relative
    strength (seeded, tau > 0 at the first call; E_b differenced at the tau it used) as for an
    absolute one."""
    atoms = cu8.copy()
    if kind == "relative":
        calc = Calculator(uq_model, bias=BiasConfig(tau_rel=0.3, window=5))
        calc.bias.relative.seed(1.0, 0.05)
    else:
        calc = Calculator(uq_model, bias=BiasConfig(tau=3.0))
    atoms.calc = calc
    stress = atoms.get_stress()
    tau = calc.results[keys.BIAS_STRENGTH]
    assert tau > 0 and calc.results[keys.BIAS_STRESS_STRENGTH] == tau
    assert np.abs(calc.results[keys.BIAS_STRESS]).max() > 1e-6
    probe = cu8.copy()
    probe.calc = Calculator(uq_model, bias=BiasConfig(tau=tau))
    np.testing.assert_allclose(stress, calculate_numerical_stress(probe, eps=1e-5), atol=1e-8)


def test_stress_window_is_seeded_saved_and_restored():
    """The stress window follows the same rules as the force window: seeded copies, the
    latest samples kept, a state that survives JSON and tops up a grown window with its means;
    without stress samples the state has no stress entries."""
    rng = np.random.default_rng(3)
    samples = rng.uniform(0.1, 2.0, size=(10, 4))
    a = RelativeStrength(0.1, window=4, tau_rel_stress=0.7)
    a.seed(1.0, 0.2, 0.03, 0.004)
    history = [(0.03, 0.004)] * 4
    for n, (f, b, s, bs) in enumerate(samples[:6]):
        last = np.array(history[-4:])
        expected = 0.7 * last[:, 0].mean() / last[:, 1].mean()
        assert a.tau_stress(bytes([n]), s, bs) == pytest.approx(expected, rel=1e-12)
        assert a.tau_stress(bytes([n]), 9.0, 9.0) == pytest.approx(expected, rel=1e-12)
        a.tau(bytes([n]), f, b)
        history.append((s, bs))
    saved = json.loads(json.dumps(a.state()))
    assert len(saved["stress"]) == 4 and len(saved["bias_stress"]) == 4
    b_ = RelativeStrength.from_state(saved, 0.1, window=4, tau_rel_stress=0.7)
    for n, (_, _, s, bs) in enumerate(samples[6:], start=6):
        assert b_.tau_stress(bytes([n]), s, bs) == a.tau_stress(bytes([n]), s, bs)
    grown = RelativeStrength.from_state(saved, 0.1, window=6, tau_rel_stress=0.7)
    kept = np.array(history[-4:])
    padded = np.r_[[kept.mean(0)] * 2, kept]
    assert grown.current_stress() == pytest.approx(0.7 * padded[:, 0].mean() / padded[:, 1].mean())
    assert "stress" not in RelativeStrength(0.1, window=2).state()
    with pytest.raises(ValueError, match="'stress' and 'bias_stress'"):
        RelativeStrength.from_state({"forces": [1.0], "bias": [1.0], "stress": [1.0]}, 0.1)
    with pytest.raises(ValueError, match="bias_stress_mean must be a finite number"):
        RelativeStrength(0.1).seed(1.0, 1.0, 1.0, -1.0)


def test_seeded_stress_window_from_frames(fitted_ensemble, cu8_frames):
    """estimate_state: the stress entries are the means over the frames of ||sigma||_F and
    ||(1/V) dU/deps||_F, each recomputed here from a unit-tau calculator's Voigt stresses."""
    from uq_bias.bias import estimate_state

    config = BiasConfig(tau_rel=0.3, tau_rel_stress=0.5)
    s_means, b_means = [], []
    for atoms in cu8_frames[:3]:
        probe = atoms.copy()
        probe.calc = Calculator(fitted_ensemble, bias=BiasConfig(tau=1.0))
        probe.get_stress()
        s_means.append(_frobenius(probe.calc.results[keys.UNBIASED_STRESS]))
        b_means.append(_frobenius(probe.calc.results[keys.BIAS_STRESS]))
    state = estimate_state(fitted_ensemble, cu8_frames[:3], config)
    np.testing.assert_allclose(state["stress"], [np.mean(s_means)], rtol=1e-10)
    np.testing.assert_allclose(state["bias_stress"], [np.mean(b_means)], rtol=1e-10)
    assert "stress" not in estimate_state(fitted_ensemble, cu8_frames[:3], BiasConfig(tau_rel=0.3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": 1.0, "tau_rel_stress": 0.5}, "absolute tau"),
        ({"tau_rel": 0.2, "tau_rel_stress": 0.5, "split": False}, "split=True"),
        ({"tau_rel_stress": -1.0}, "tau_rel_stress must be a finite number"),
    ],
)
def test_a_bad_stress_strength_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BiasConfig(**kwargs)
    BiasConfig(tau=1.0, tau_rel_stress=0.0)  # an absolute bias with the stress bias off is fine


def _bias_forces(model, atoms, **config):
    atoms = atoms.copy()
    atoms.calc = Calculator(model, bias=BiasConfig(tau=0.5, **config))
    atoms.get_forces()
    return atoms.calc.results[keys.BIAS_FORCES]


def test_project_auto_follows_the_bond_graph(gradient_model, methanol, cu8):
    """The default project='auto' projects a molecule with a backbone rotor (butane's C-C-C-C)
    exactly as 'torsions' does, and leaves a molecule without one (methanol: only hydrogens
    turn) and a crystal with the full gradient, as 'none' does."""
    from ase.build import molecule

    butane = molecule("trans-butane")
    assert BiasConfig().project == "auto"
    auto, torsions = (_bias_forces(gradient_model, butane, project=p) for p in ("auto", "torsions"))
    full = _bias_forces(gradient_model, butane, project="none")
    np.testing.assert_allclose(auto, torsions, rtol=1e-12, atol=1e-15)
    assert np.linalg.norm(auto - full) > 1e-3 * np.linalg.norm(full)
    for rigid in (methanol, cu8):
        auto = _bias_forces(gradient_model, rigid, project="auto")
        np.testing.assert_allclose(auto, _bias_forces(gradient_model, rigid, project="none"))


def test_fade_in_kt_is_the_absolute_fade_at_the_walkers_temperature(gradient_model, methanol):
    """fade_kt [x, y] at T equals fade [x k_B T, y k_B T] eV/atom (k_B from CODATA, written out
    here) on a sequence of stretched frames; without a temperature a kT fade is off; an
    absolute fade wins over fade_kt. The defaults at 300 K are the alanine values to 5%."""
    k_b = 8.617333262e-5  # eV/K, CODATA 2018 (ASE's units are CODATA 2014: 3e-7 apart)
    assert BiasConfig().fade_range(300.0) == pytest.approx((0.04, 0.07), rel=0.05)
    assert BiasConfig(fade=[0.01, 0.02]).fade_range(300.0) == (0.01, 0.02)
    assert BiasConfig().fade_range(None) is None and BiasConfig().fade_range(0.0) is None
    stretches = (0.3, 0.2, 0.15, 0.1, 0.05, 0.0, 0.3)  # down the surface, then up again
    frames = []
    for stretch in stretches:
        atoms = methanol.copy()
        atoms.positions[1] = methanol.positions[1] * (1 + stretch)
        frames.append(atoms)
    plain = Calculator(gradient_model, bias=BiasConfig(tau=0.7, fade_kt=None))
    per_atom = []
    for atoms in frames:
        atoms.calc = plain
        atoms.get_forces()
        per_atom.append(plain.results[keys.UNBIASED_ENERGY] / len(atoms))
    rise = max(np.array(per_atom) - np.minimum.accumulate(per_atom))
    in_kt = [0.5, 3.0]
    temperature = 0.8 * rise / (in_kt[1] * k_b)  # the fade ends at 0.8 of the largest rise
    a, b = in_kt[0] * k_b * temperature, in_kt[1] * k_b * temperature
    kt = Calculator(
        gradient_model, bias=BiasConfig(tau=0.7, fade_kt=in_kt), temperature=temperature
    )
    absolute = Calculator(gradient_model, bias=BiasConfig(tau=0.7, fade=[a, b], fade_kt=None))
    no_temperature = Calculator(gradient_model, bias=BiasConfig(tau=0.7, fade_kt=in_kt))
    strengths = []
    for atoms in frames:
        for calc in (kt, absolute, no_temperature):
            atoms.calc = calc
            atoms.get_forces()
        assert kt.results[keys.BIAS_STRENGTH] == pytest.approx(
            absolute.results[keys.BIAS_STRENGTH], rel=1e-5
        )
        np.testing.assert_allclose(kt.results["forces"], absolute.results["forces"], rtol=1e-5)
        assert no_temperature.results[keys.BIAS_STRENGTH] == 0.7
        strengths.append(kt.results[keys.BIAS_STRENGTH])
    assert strengths[0] == 0.7 and min(strengths) < 0.7  # the fade did act


@pytest.mark.parametrize("fade_kt", [[1.0], [2.0, 1.0], [-1.0, 1.0]])
def test_a_bad_fade_in_kt_is_refused(fade_kt):
    with pytest.raises(ValueError, match="fade_kt must be \\[a, b\\] with 0 <= a < b"):
        BiasConfig(fade_kt=fade_kt)


def test_projection_note_says_where_auto_projects(methanol, cu8):
    """The campaign log's line: project auto is on for alanine dipeptide (2 rotatable bonds),
    off for methanol and a crystal, and off with split false."""
    from uq_bias.bias.projection import projection_note
    from uq_bias.campaign.systems import builtin

    alanine = builtin("alanine_dipeptide")[0]
    note = projection_note("auto", True, [alanine, methanol])
    assert "on torsions for 1 of 2 start structure(s)" in note and ": 2, 0)" in note
    assert "off (no start structure" in projection_note("auto", True, [methanol, cu8])
    assert "off with split: false" in projection_note("auto", False, [alanine])
    assert projection_note("none", True, [alanine]).endswith("the full uncertainty gradient")
