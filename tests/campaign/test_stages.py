"""Stage helpers: the train/validation split is stable as data grow; walker start points;
strained initial frames; selection conditioned on every labelled frame."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule

from uq_bias.campaign import from_dict
from uq_bias.campaign.stages import Context, label_initial, perturbed, split, walker_starts
from uq_bias.campaign.state import CampaignState, read_frames, read_json, with_id, write_frames

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


def test_split_is_stable_as_data_grow():
    data = frames(400)
    train_small, valid_small = split(data[:100], 0.25, seed=3)
    train_big, valid_big = split(data, 0.25, seed=3)
    assert ids(valid_small) <= ids(valid_big) and ids(train_small) <= ids(train_big)
    assert abs(len(valid_big) / 400 - 0.25) < 0.06  # binomial: sd = 0.022
    assert not ids(train_big) & ids(valid_big)


def test_split_gives_each_side_a_frame():
    two = frames(2, seed=1)
    for fraction in (0.01, 0.99):
        train, valid = split(two, fraction, seed=0)
        assert len(train) == len(valid) == 1


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
        got = walker_starts(Context(state, config, None, starts))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
            assert a.calc is None


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
        "data": {"structures": "x.xyz", "valid_fraction": 0.5},
        "selection": {"batch_size": 4},
    }
    config = from_dict(sections, tmp_path)
    state = CampaignState(tmp_path)
    labelled = [with_id(a) for a in rattled_cu_frames(10, seed=3, size=(2, 1, 1))]
    state.add_labelled(labelled, 0)
    train, valid = split(labelled, config.data.valid_fraction, config.seed)
    assert len(valid) >= 3
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
    md |= {"sample_every": 3, "steps": 77}
    exploration = {**md, "watchdog": watchdog}
    config = from_dict({"data": {"structures": "x.xyz"}, "exploration": exploration}, tmp_path)
    got = narrow(config.exploration, ExploreConfig)
    assert got.watchdog == WatchdogConfig(**watchdog)
    assert {name: getattr(got, name) for name in md} == md
