"""cell_ranges: the volumes read back from a campaign folder written through CampaignState."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from cell_ranges import range_lines, volumes

from uq_bias.campaign.state import CampaignState, write_frames


def cube(side: float) -> Atoms:
    return Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 1]], cell=np.eye(3) * side, pbc=True)


@pytest.fixture
def folder(tmp_path):
    state = CampaignState(tmp_path / "c")
    state.add_labelled([cube(2.0)], iteration=0)  # shared initial frame: not a pick
    state.add_labelled([cube(3.0), cube(3.5), cube(4.0)], iteration=1)
    walkers = state.root / "iterations" / "001" / "walkers"
    walkers.mkdir(parents=True)
    write_frames(walkers / "w000.extxyz", [cube(2.0), cube(3.0)])
    write_frames(walkers / "w001.extxyz", [cube(4.0)])
    return state.root


def test_volumes_are_per_atom_of_kept_frames_and_of_picks_only(folder):
    kept, picked = volumes(folder)
    np.testing.assert_allclose(sorted(kept), [4.0, 13.5, 32.0])  # side^3 / 2 atoms
    np.testing.assert_allclose(sorted(picked), [13.5, 21.4375, 32.0])


def test_range_lines_give_min_median_max_and_the_share_below(folder):
    lines = range_lines({("biased", 0): folder}, narrow_below=10.0)
    assert lines[-1] == "| biased | 0 | 4.0 / 13.5 / 32.0 | 13.5 / 21.4 / 32.0 | 33.3% |"
