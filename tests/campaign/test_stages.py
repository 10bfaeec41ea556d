"""Stage helpers: the train/validation split is stable as data grow; walker start points."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from uq_bias.campaign import from_dict
from uq_bias.campaign.stages import Context, split, walker_starts
from uq_bias.campaign.state import CampaignState, with_id

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
