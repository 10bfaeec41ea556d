"""Stage helpers: the train/validation split is stable as data grow; walker start points."""

from __future__ import annotations

import numpy as np
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
