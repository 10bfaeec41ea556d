"""Campaign state: atomic writes, the journal, and merging each labelled frame exactly once."""

from __future__ import annotations

import os

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from uq_bias.campaign.oracles import Failure
from uq_bias.campaign.state import CampaignState, atomic_path, frame_id, with_id, write_text


def labelled_cu(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(with_id(atoms))
    return frames


def test_frame_id_depends_on_geometry_only():
    a = bulk("Cu", cubic=True)
    b = a.copy()
    b.info["note"] = "x"
    assert frame_id(a) == frame_id(b)
    b.positions[0, 0] += 1e-9
    assert frame_id(a) != frame_id(b)


def test_merge_adds_each_frame_once_and_keeps_labels(tmp_path):
    state = CampaignState(tmp_path)
    frames = labelled_cu(5)
    assert state.add_labelled(frames[:3], iteration=0) == 3
    assert state.add_labelled(frames[1:], iteration=1) == 2  # 1 and 2 are already there
    data = state.labelled()
    assert [a.info["frame_id"] for a in data] == [a.info["frame_id"] for a in frames]
    assert [a.info["iteration"] for a in data] == [0, 0, 0, 1, 1]
    for got, want in zip(data, frames):
        np.testing.assert_allclose(got.get_forces(), want.get_forces(), atol=1e-8)  # 8 decimals
        assert got.get_potential_energy() == want.get_potential_energy()  # energy: full repr


def test_journal_and_failures(tmp_path):
    state = CampaignState(tmp_path)
    assert not state.done(1, "train")
    state.mark(1, "train")
    state.mark(1, "train")
    assert CampaignState(tmp_path).done(1, "train")
    assert state.journal()["done"] == ["1/train"]
    state.add_failures([Failure("f-1", "boom")], 2)
    state.add_failures([Failure("f-1", "boom")], 2)
    assert state.failures() == [{"frame_id": "f-1", "iteration": 2, "reason": "boom"}]
    assert "oracle failed on f-1: boom" in state.log_path.read_text()


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "old")
    try:
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary file left behind
