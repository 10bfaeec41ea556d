"""Stage helpers: data roles are disjoint and stable as data grow; walker start points."""

from __future__ import annotations

import hashlib

import numpy as np
from ase.build import bulk

from uq_bias.campaign import from_dict
from uq_bias.campaign.roles import split_roles
from uq_bias.campaign.stages import Context, walker_starts
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
        got = walker_starts(Context(state, config, None, starts))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)
            assert a.calc is None
