"""Stage helpers: data roles are disjoint and stable as data grow; walker start points;
strained initial frames; selection conditioned on every labelled frame."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from uq_bias.campaign import from_dict
from uq_bias.campaign.roles import split_roles
from uq_bias.campaign.stages import Context, label_initial, perturbed, walker_starts
from uq_bias.campaign.state import (
    CampaignState,
    read_frames,
    read_json,
    with_id,
    write_frames,
    write_json,
)

from .test_loop import cu_labelled


def frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", cubic=True)
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        out.append(with_id(atoms))
    return out


def ids(atoms_list):
    return {a.info["frame_id"] for a in atoms_list}


def test_roles_are_disjoint_and_stable_as_data_grow():
    data = frames(400)
    small = split_roles(data[:100], 0.15, 0.2, seed=3)
    big = split_roles(data, 0.15, 0.2, seed=3)
    for name in ("train", "valid", "calibration"):
        assert ids(getattr(small, name)) <= ids(getattr(big, name))
    assert abs(len(big.valid) / 400 - 0.15) < 0.06  # binomial: sd = 0.018
    assert abs(len(big.calibration) / 400 - 0.2) < 0.06  # sd = 0.02
    parts = [ids(big.train), ids(big.valid), ids(big.calibration)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 400  # disjoint, complete
    # the thresholds of the docstring, recomputed from the hash
    for frame in data[:50]:
        digest = hashlib.sha1(f"3:{frame.info['frame_id']}".encode()).hexdigest()
        u = int(digest[:8], 16) / 2**32
        role = "valid" if u < 0.15 else "calibration" if u < 0.35 else "train"
        assert frame.info["frame_id"] in ids(getattr(big, role))


def test_roles_give_each_role_a_frame():
    for n in (3, 4, 6):
        for fractions in ((0.01, 0.01), (0.49, 0.5), (0.9, 0.05)):
            roles = split_roles(frames(n, seed=n), *fractions, seed=0)
            assert len(roles.train) >= 1 and len(roles.valid) >= 1 and len(roles.calibration) >= 1
            assert len(roles.train) + len(roles.valid) + len(roles.calibration) == n
    two = frames(2, seed=1)
    roles = split_roles(two, 0.2, 0.0, seed=0)  # no calibration share: valid calibrates
    assert len(roles.train) == len(roles.valid) == 1 and roles.calibration is roles.valid


def test_walkers_start_from_structures_or_latest_labels(tmp_path):
    state = CampaignState(tmp_path)
    labelled = cu_labelled(3)
    state.add_labelled(labelled, 0)
    starts = [bulk("Cu", cubic=True)]
    for start, expected in (("structures", starts), ("labelled", labelled[1:])):
        config = from_dict(
            {"data": {"structures": "x.xyz"}, "exploration": {"walkers": 2, "start": start}},
            tmp_path,
        )
        got = walker_starts(Context(state, config, None, starts), 2)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
            assert a.calc is None


def test_walkers_continue_from_their_lowest_recent_frame_unless_they_blew_up(tmp_path):
    """start: last. Walker 0 completed iteration 1 on a climb (its frames rising in energy)
    and goes on from its kept frame lowest in energy under iteration 2's model (energies from
    the ASE calculator on that model); walker 1 blew up and starts again from the start
    structure; walker 2 started again within its walk, and only its frames since count;
    walker 3 ended falling into a spurious low of the model and starts again from the start
    structure; iteration 1 starts from the start structure."""
    from uq_bias.calculator import Calculator
    from uq_bias.campaign import uq
    from uq_bias.campaign.stages import uncertainty_dir
    from uq_bias.training import build_mace, save_model
    from uq_bias.uncertainty import Ensemble

    state = CampaignState(tmp_path)
    starts = [bulk("Cu", cubic=True)]
    config = from_dict(
        {"data": {"structures": "x.xyz"}, "exploration": {"walkers": 4, "start": "last"}},
        tmp_path,
    )
    ctx = Context(state, config, None, starts)
    paths = [str(tmp_path / f"m{j}.model") for j in range(2)]
    for j, path in enumerate(paths):
        save_model(build_mace([29], cutoff=3.5, seed=j), path)
    uq.save(Ensemble(paths), uncertainty_dir(ctx, 2))

    def energy(atoms):
        atoms = atoms.copy()
        atoms.calc = Calculator(uq.load(uncertainty_dir(ctx, 2)))
        return atoms.get_potential_energy()

    walk = sorted(cu_labelled(5), key=energy)  # a climb: the lowest first
    folder = state.iteration_dir(1) / "walkers"
    folder.mkdir(parents=True)
    for i, (reason, kept) in enumerate((("completed", walk), ("min_distance", walk[:2]))):
        write_frames(folder / f"w{i:02d}.extxyz", kept)
        write_json(folder / f"w{i:02d}.json", {"stop_reason": reason})
    restarted = [a.copy() for a in (walk[0], walk[3], walk[4])]
    for a, step in zip(restarted, (10, 40, 50)):
        a.info["step"] = step
    write_frames(folder / "w02.extxyz", restarted)
    summary = {"stop_reason": "completed", "restarts": [{"reason": "max_force", "step": 30}]}
    write_json(folder / "w02.json", summary)
    write_frames(folder / "w03.extxyz", walk)
    write_json(folder / "w03.json", {"stop_reason": "energy_drop"})
    for k, expected in ((1, starts), (2, [walk[0], starts[0], walk[3], starts[0]])):
        got = walker_starts(ctx, k)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)


def _restarts(tmp_path, exploration, starts, walked, model=None):
    """The specs of the explore stage of iteration 2 (walker i from walked[i]) after
    :func:`restart_where`; ``model``: an uncertainty model saved as iteration 2's."""
    from uq_bias.campaign import uq
    from uq_bias.campaign.stages import restart_where, uncertainty_dir
    from uq_bias.dynamics import WalkerSpec

    config = from_dict({"data": {"structures": "x.xyz"}, "exploration": exploration}, tmp_path)
    ctx = Context(CampaignState(tmp_path), config, None, starts)
    if model is not None:
        uq.save(model, uncertainty_dir(ctx, 2))
    specs = [WalkerSpec(i, a, calculator=None, config=None) for i, a in enumerate(walked)]
    return restart_where(ctx, 2, specs)


def test_walkers_start_again_from_their_start_structure(tmp_path):
    """exploration.restarts: a walker that goes on from its last frame starts again, after a
    blow-up, from its start structure (walker i from structure i mod n), not from that frame."""
    starts = [bulk("Cu", cubic=True), bulk("Cu", cubic=True, a=3.7)]
    walked = cu_labelled(3)
    exploration = {"walkers": 3, "start": "last", "restarts": 2, "bias": {"tau": 0.5}}
    for i, again in enumerate(_restarts(tmp_path, exploration, starts, walked)):
        assert again.start is walked[i] and again.restart_start is starts[i % 2]
        assert again.restart_bias_state is None  # an absolute tau has no window


def test_a_restart_window_is_measured_on_the_start_structures(tmp_path):
    """start: labelled with tau_rel: walkers start from labelled frames, but one that starts
    again starts from its start structure, and its window's <|F|> is the mean |F_i| there
    (from the ASE calculator on the same model), not over the labelled frames."""
    from uq_bias.calculator import Calculator
    from uq_bias.training import build_mace, save_model
    from uq_bias.uncertainty import Ensemble

    paths = [str(tmp_path / f"m{j}.model") for j in range(2)]
    for j, path in enumerate(paths):
        save_model(build_mace([29], cutoff=3.5, seed=j), path)
    model = Ensemble(paths)
    starts = [bulk("Cu", cubic=True) * (2, 1, 1)]
    starts[0].rattle(0.05, seed=1)
    walked = cu_labelled(2)
    exploration = {"walkers": 2, "start": "labelled", "restarts": 1, "bias": {"tau_rel": 0.2}}
    specs = _restarts(tmp_path / "c", exploration, starts, walked, model)

    def mean_force(atoms):
        atoms = atoms.copy()
        atoms.calc = Calculator(model)
        return np.linalg.norm(atoms.get_forces(), axis=1).mean()

    for spec in specs:
        assert spec.restart_start is starts[0]
        got = spec.restart_bias_state["forces"][0]
        assert got == pytest.approx(mean_force(starts[0]), rel=1e-6)
        assert got != pytest.approx(np.mean([mean_force(a) for a in walked]), rel=1e-2)


def _label_initial(tmp_path, structures, **data):
    from uq_bias.campaign.loop import LazyExecutor

    config = from_dict(
        {"data": {"structures": "x.xyz", "initial_frames": 6, **data}, "oracle": {"kind": "emt"}},
        tmp_path,
    )
    state = CampaignState(tmp_path / str(data))
    ctx = Context(state, config, LazyExecutor(config.executor), structures, say=lambda _: None)
    state.iteration_dir(0).mkdir(parents=True, exist_ok=True)
    label_initial(ctx, 0)
    return read_frames(state.iteration_dir(0) / "labelled.extxyz")


def test_periodic_initial_frames_are_strained(tmp_path):
    """A Cu cell: each initial frame's cell is cell0 (I + eps) with eps symmetric and at most
    `strain`, atoms scaled with it; the EMT stress labels spread far more than for rattled
    copies alone (whose pressure barely moves). A molecule is only rattled."""
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    strained = _label_initial(tmp_path, [cell], strain=0.03, rattle=0.01)
    rattled = _label_initial(tmp_path, [cell], strain=0.0, rattle=0.01)
    for atoms in strained:
        eps = np.linalg.solve(cell.cell.array, atoms.cell.array) - np.eye(3)
        np.testing.assert_allclose(eps, eps.T, atol=1e-10)
        assert 1e-3 < np.abs(eps).max() <= 0.03
        shift = atoms.get_scaled_positions(wrap=False) - cell.get_scaled_positions(wrap=False)
        assert np.abs(shift @ atoms.cell.array).max() < 0.06  # only the 0.01 A rattle
    for frames in (strained, rattled):
        assert all(f.calc is not None and f.get_stress().shape == (6,) for f in frames)
    stress = np.array([f.get_stress() for f in strained])
    plain = np.array([f.get_stress() for f in rattled])
    assert stress.std(axis=0).max() > 10 * plain.std(axis=0).max()
    pairs = [(i, j) for i in range(len(stress)) for j in range(i)]
    assert min(np.abs(stress[i] - stress[j]).max() for i, j in pairs) > 1e-3  # eV/A^3


def test_molecules_are_rattled_not_strained():
    mol = molecule("CH3OH")
    rng, reference = np.random.default_rng(5), np.random.default_rng(5)
    out = perturbed(mol, rng, rattle=0.02, strain=0.05)
    expected = mol.positions + reference.normal(scale=0.02, size=(len(mol), 3))
    np.testing.assert_allclose(out.positions, expected, atol=1e-12)
    np.testing.assert_allclose(out.cell.array, mol.cell.array)


def test_selection_is_conditioned_on_held_out_frames_too(tmp_path):
    """The uncertainty model is fitted on the training split only (half the labels); the pool
    holds near-copies (0.01 A) of every labelled frame. The stage's picks are those of a
    brute-force greedy log-det on the posterior given *all* labelled frames (Phi = dE/dw by
    autograd, numpy), and differ from the picks given the training split alone (what selection
    on the model's own posterior did)."""
    import torch
    from reference_data import rattled_cu_frames

    from uq_bias.campaign import uq as unc
    from uq_bias.campaign.stages import select, uncertainty_dir
    from uq_bias.models import load_model
    from uq_bias.selection import greedy_logdet_reference
    from uq_bias.training.build import build_mace
    from uq_bias.uncertainty import GradientFeatureUncertainty

    sections = {
        "data": {"structures": "x.xyz", "valid_fraction": 0.5, "calibration_fraction": 0.0},
        "selection": {"batch_size": 4},
    }
    config = from_dict(sections, tmp_path)
    state = CampaignState(tmp_path)
    labelled = [with_id(a) for a in rattled_cu_frames(10, seed=3, size=(2, 1, 1))]
    state.add_labelled(labelled, 0)
    d = config.data
    roles = split_roles(labelled, d.valid_fraction, d.calibration_fraction, config.seed)
    train = roles.train
    assert len(labelled) - len(train) >= 3
    path = tmp_path / "m.model"
    torch.save(build_mace([13, 29], cutoff=3.5, seed=2), path)
    model = GradientFeatureUncertainty(str(path)).fit(train)
    ctx = Context(state, config, None, [], say=lambda _: None)
    ctx.dir(1).mkdir(parents=True, exist_ok=True)
    unc.save(model, uncertainty_dir(ctx, 1))
    pool = []
    for i, atoms in enumerate(labelled):
        near = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
        near.rattle(0.01, seed=i)
        pool.append(with_id(near))
    write_frames(ctx.dir(1) / "candidates.extxyz", pool)
    select(ctx, 1)
    selection = read_json(ctx.dir(1) / "selection.json")
    picked = selection["indices"]
    assert selection["n_filled"] == 0
    adapter = load_model(str(path))
    given_all = greedy_logdet_reference(_kernel(adapter, labelled, pool, model.sigma), 4)
    given_train = greedy_logdet_reference(_kernel(adapter, train, pool, model.sigma), 4)
    assert picked == given_all
    assert given_train != given_all


def _kernel(adapter, labelled, pool, sigma):
    """sigma^2 Phi~_P (Phi~_L^T Phi~_L + sigma^2 I)^-1 Phi~_P^T, Phi = dE/dw by autograd."""
    import torch

    def phi(frames):
        rows = [adapter.last_layer_gradient(adapter(adapter.graph(f)).energy[0]) for f in frames]
        return torch.stack(rows).detach().double().numpy()

    phi_l, phi_p = phi(labelled), phi(pool)
    s = np.sqrt(len(labelled) / (phi_l**2).sum())
    a = s**2 * phi_l.T @ phi_l + sigma**2 * np.eye(phi_l.shape[1])
    return torch.from_numpy(sigma**2 * s**2 * phi_p @ np.linalg.solve(a, phi_p.T))


def test_every_watchdog_and_md_option_reaches_the_walkers(tmp_path):
    """Watchdog and MD options set in the YAML arrive in the ExploreConfig the explore stage
    hands to the walkers (the same narrowing as the stage)."""
    from uq_bias.dynamics import ExploreConfig, WatchdogConfig
    from uq_bias.options import narrow

    watchdog = {
        "max_uncertainty": 0.3,
        "max_hal_ratio": 2.0,
        "hal_eps": 0.05,
        "min_distance": 0.7,
        "max_force": 20.0,
    }
    md = {"timestep": 0.25, "temperature": 500.0, "ensemble": "npt", "pressure": 1.5}
    md |= {"friction": 0.02, "tdamp": 50.0, "pdamp": 500.0, "npt_cell": "isotropic"}
    md |= {"sample_every": 3, "steps": 77, "restarts": 4}
    exploration = {**md, "watchdog": watchdog}
    config = from_dict({"data": {"structures": "x.xyz"}, "exploration": exploration}, tmp_path)
    got = narrow(config.exploration, ExploreConfig)
    assert got.watchdog == WatchdogConfig(**watchdog)
    assert {name: getattr(got, name) for name in md} == md


def test_ensemble_campaign_selects_full_batches(tmp_path):
    """A 4-member ensemble and batch 8: the stage makes 8 max-det picks (no fill-up; the
    members' energies alone allow 3), equal to a brute-force greedy log-det on the mean of the
    members' posterior kernels given every labelled frame (Phi = dE/dw by autograd, numpy)."""
    import copy

    import torch
    from reference_data import rattled_cu_frames

    from uq_bias.campaign import uq as unc
    from uq_bias.campaign.stages import select, uncertainty_dir
    from uq_bias.models import load_model
    from uq_bias.selection import greedy_logdet_reference
    from uq_bias.training.build import build_mace
    from uq_bias.uncertainty import Ensemble

    sections = {"data": {"structures": "x.xyz"}, "model": {"ensemble": 4}}
    config = from_dict({**sections, "selection": {"batch_size": 8}}, tmp_path)
    state = CampaignState(tmp_path)
    labelled = [with_id(a) for a in rattled_cu_frames(4, seed=3, size=(2, 1, 1))]
    state.add_labelled(labelled, 0)
    paths = [str(tmp_path / f"member_{j}.model") for j in range(4)]
    base = build_mace([13, 29], cutoff=3.5, seed=10)
    for j, path in enumerate(paths):  # members: the weights of one model, each scaled apart
        member = copy.deepcopy(base)
        generator = torch.Generator().manual_seed(j)
        with torch.no_grad():
            for weight in member.parameters():
                noise = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
                weight.mul_(1 + 0.2 * noise)
        torch.save(member, path)
    ctx = Context(state, config, None, [], say=lambda _: None)
    ctx.dir(1).mkdir(parents=True, exist_ok=True)
    unc.save(Ensemble(paths), uncertainty_dir(ctx, 1))
    pool = [with_id(a) for a in rattled_cu_frames(11, seed=4, size=(2, 1, 1))]
    write_frames(ctx.dir(1) / "candidates.extxyz", pool)
    select(ctx, 1)
    selection = read_json(ctx.dir(1) / "selection.json")
    assert len(selection["indices"]) == 8 and selection["n_filled"] == 0
    kernels = [_kernel(load_model(p), labelled, pool, 1e-2).numpy() for p in paths]
    expected = greedy_logdet_reference(torch.from_numpy(np.mean(kernels, axis=0)), 8)
    assert selection["indices"] == expected


def test_explore_stage_runs_the_batched_engine(tmp_path, cu_frames):
    """exploration.engine: batched in the YAML: one batch writes every walker's frames and
    record like the ASE path; each frame's uncertainty is the saved model's at its positions."""
    from ase.io import read

    from uq_bias import keys
    from uq_bias.calculator import Calculator
    from uq_bias.campaign import uq
    from uq_bias.campaign.stages import explore, uncertainty_dir
    from uq_bias.campaign.state import read_json
    from uq_bias.models import load_model
    from uq_bias.training import build_mace, save_model

    mace = build_mace([13, 29], cutoff=4.0, preset="tiny", seed=0)
    path = str(save_model(load_model(mace), tmp_path / "member.model"))
    yaml_data = {
        "data": {"structures": "x.xyz"},
        "device": "cpu",
        "exploration": {
            "engine": "batched",
            "walkers": 3,
            "steps": 6,
            "sample_every": 2,
            "bias": {"tau_rel": 0.5, "window": 2},
        },
    }
    config = from_dict(yaml_data, tmp_path)
    model, _ = uq.fit([path], cu_frames[:6], cu_frames[6:], config)
    state = CampaignState(tmp_path / "c")
    ctx = Context(state, config, None, [cu_frames[0], cu_frames[1]], say=lambda _: None)
    uq.save(model, uncertainty_dir(ctx, 1))
    explore(ctx, 1)
    walkers = ctx.dir(1) / "walkers"
    candidates = read(ctx.dir(1) / "candidates.extxyz", ":")
    assert len(candidates) == 9  # 3 walkers, steps 2, 4, 6
    loaded = uq.load(uncertainty_dir(ctx, 1))
    for i in range(3):
        assert read_json(walkers / f"w{i:02d}.json")["stop_reason"] == "completed"
        frames = read(walkers / f"w{i:02d}.extxyz", ":")
        assert [f.info["walker"] for f in frames] == [i] * 3
        for frame in frames:
            atoms = frame.copy()
            atoms.calc = Calculator(loaded)
            atoms.get_forces()
            expected = atoms.calc.results[keys.ENERGY_UNCERTAINTY]
            assert frame.info[keys.ENERGY_UNCERTAINTY] == pytest.approx(expected, rel=1e-5)
    assert max(f.info[keys.BIAS_STRENGTH] for f in candidates) > 0


def test_select_labels_no_frame_that_adds_nothing(tmp_path, monkeypatch):
    """Max-det picked 3 of the 5 asked and filled up 2 that add nothing: only the 3 are sent to
    the oracle (selected.extxyz), and selection.json says 3 of 5 asked."""
    import uq_bias.campaign.stages.selection as stage
    import uq_bias.selection as selection
    from uq_bias.selection.result import Selection

    state = CampaignState(tmp_path / "c")
    config = from_dict({"data": {"structures": "x.xyz"}, "selection": {"batch_size": 5}}, tmp_path)
    ctx = Context(state, config, None, [], say=lambda _: None)
    pool = [with_id(a) for a in cu_labelled(6)]
    write_frames(ctx.dir(1) / "candidates.extxyz", pool)
    monkeypatch.setattr(stage, "load_uncertainty", lambda ctx, k: None)
    picks = Selection([4, 0, 2, 1, 3], [1.0, 0.5, 0.1, 0.0, 0.0], "maxdet", n_filled=2)
    monkeypatch.setattr(selection, "select", lambda *args, **kwargs: picks)
    stage.select(ctx, 1)
    chosen = read_json(ctx.dir(1) / "selection.json")
    assert chosen["indices"] == [4, 0, 2] and chosen["scores"] == [1.0, 0.5, 0.1]
    assert (chosen["n_asked"], chosen["n_filled"]) == (5, 2)
    selected = [a.info["frame_id"] for a in read_frames(ctx.dir(1) / "selected.extxyz")]
    assert selected == [pool[i].info["frame_id"] for i in (4, 0, 2)]


def test_walkers_start_with_a_stress_window_measured_at_their_start(tmp_path):
    """bias.tau_rel_stress: every fresh walker's window (and a restart's) holds <||sigma||_F> and
    <||(1/V) dU/deps||_F> of the iteration's model at the start structure, recomputed here from
    the ASE calculator's Voigt stresses at tau = 1; bias_seed.json records them."""
    from uq_bias.bias import BiasConfig
    from uq_bias.calculator import Calculator
    from uq_bias.campaign import uq
    from uq_bias.campaign.stages import bias_states, uncertainty_dir
    from uq_bias.training import build_mace, save_model
    from uq_bias.uncertainty import Ensemble

    paths = [str(tmp_path / f"m{j}.model") for j in range(2)]
    for j, path in enumerate(paths):
        save_model(build_mace([29], cutoff=3.5, seed=j), path)
    model = Ensemble(paths)
    starts = [bulk("Cu", cubic=True) * (2, 1, 1)]
    starts[0].rattle(0.05, seed=1)
    bias = {"tau_rel": 0.2, "tau_rel_stress": 0.5}
    exploration = {"walkers": 2, "restarts": 1, "bias": bias}
    config = from_dict({"data": {"structures": "x.xyz"}, "exploration": exploration}, tmp_path)
    ctx = Context(CampaignState(tmp_path / "c"), config, None, starts)
    uq.save(model, uncertainty_dir(ctx, 2))
    probe = starts[0].copy()
    probe.calc = Calculator(model, bias=BiasConfig(tau=1.0))
    probe.get_stress()

    def frobenius(v):
        return np.sqrt(np.sum(np.square(v[:3])) + 2 * np.sum(np.square(v[3:])))

    expected_stress = frobenius(probe.calc.results["unbiased_stress"])
    expected_bias = frobenius(probe.calc.results["bias_stress"])
    states = bias_states(ctx, 2, 2)
    for state in states:
        assert state["stress"][0] == pytest.approx(expected_stress, rel=1e-8)
        assert state["bias_stress"][0] == pytest.approx(expected_bias, rel=1e-8)
    seed = read_json(ctx.dir(2) / "bias_seed.json")
    assert seed["stress_mean"] == pytest.approx(expected_stress, rel=1e-8)
    specs = _restarts(tmp_path / "c", exploration, starts, cu_labelled(2))
    assert specs[0].restart_bias_state == states[0]


@pytest.mark.parametrize("tau", [None, 0.0])
def test_biased_candidates_are_chosen_within_the_thermal_band(tmp_path, tau):
    """Twelve candidates of walker 0: six whose unbiased energy per atom lies 1 meV above the
    model's energy of the start structure, six 0.2 eV/atom above. With a bias (tau_rel) every
    pick is one of the six, and the band's limit is the closed form of the harmonic thermal
    energy of an 8-atom cell at 300 K (f = 3N - 3: mean f k_B T / 2N plus 3 std
    sqrt(f / 2) k_B T / N, written out here); plain MD (tau 0) is not filtered."""
    import torch
    from ase.units import kB
    from reference_data import rattled_cu_frames

    from uq_bias.campaign import uq as unc
    from uq_bias.campaign.stages import select, uncertainty_dir
    from uq_bias.training.build import build_mace
    from uq_bias.uncertainty import GradientFeatureUncertainty

    bias = {} if tau is None else {"tau": tau}
    sections = {
        "data": {"structures": "x.xyz", "valid_fraction": 0.5, "calibration_fraction": 0.0},
        "exploration": {"temperature": 300.0, "bias": bias},
        "selection": {"batch_size": 4},
    }
    config = from_dict(sections, tmp_path)
    state = CampaignState(tmp_path)
    labelled = [with_id(a) for a in rattled_cu_frames(6, seed=3, size=(2, 1, 1))]
    state.add_labelled(labelled, 0)
    path = tmp_path / "m.model"
    torch.save(build_mace([13, 29], cutoff=3.5, seed=2), path)
    model = GradientFeatureUncertainty(str(path)).fit(labelled)
    start = rattled_cu_frames(1, seed=9, size=(2, 1, 1))[0]
    start.calc = None
    ctx = Context(state, config, None, [start], say=lambda _: None)
    ctx.dir(1).mkdir(parents=True, exist_ok=True)
    unc.save(model, uncertainty_dir(ctx, 1))
    n = len(start)
    reference = float(model(model.graph([start])).energy[0].detach()) / n
    pool = []
    for i, atoms in enumerate(rattled_cu_frames(12, seed=5, size=(2, 1, 1))):
        atoms.calc = None
        atoms.info.update(walker=0, unbiased_energy=n * (reference + (1e-3 if i < 6 else 0.2)))
        pool.append(with_id(atoms))
    write_frames(ctx.dir(1) / "candidates.extxyz", pool)
    select(ctx, 1)
    selection = read_json(ctx.dir(1) / "selection.json")
    if tau == 0.0:
        assert selection["thermal_band"] is None
        return
    kt, f = kB * 300.0, 3 * n - 3
    limit = f * kt / (2 * n) + 3 * np.sqrt(f / 2) * kt / n
    assert selection["thermal_band"]["limits"] == [pytest.approx(limit, abs=1e-4)]
    assert selection["thermal_band"]["n_in_band"] == 6
    assert len(selection["indices"]) == 4 and set(selection["indices"]) <= set(range(6))
