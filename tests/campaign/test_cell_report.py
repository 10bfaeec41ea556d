"""The report's cell section: volumes and times of the walkers' frames against closed forms."""

from __future__ import annotations

import pytest
from ase.build import bulk

from uq_bias.campaign.cell_report import cell_section, volume_traces
from uq_bias.campaign.config import from_dict
from uq_bias.campaign.state import CampaignState, write_frames


def walker_frames(scales, steps):
    """fcc Cu (a = 3.6 A, 4 atoms) scaled by each linear factor, tagged with its MD step."""
    frames = []
    for s, step in zip(scales, steps):
        atoms = bulk("Cu", "fcc", a=3.6 * s, cubic=True)
        atoms.info["step"] = step
        frames.append(atoms)
    return frames


def test_volume_traces_and_section(tmp_path):
    state = CampaignState(tmp_path / "c")
    for k, scales in ((1, (1.0, 1.02)), (2, (1.04, 0.98))):
        folder = state.iteration_dir(k) / "walkers"
        folder.mkdir(parents=True)
        write_frames(folder / "w00.extxyz", walker_frames(scales, (10, 20)))
    traces = volume_traces(state, steps=100, timestep=2.0)
    expected = [(0.02, 1.0), (0.04, 1.02), (0.22, 1.04), (0.24, 0.98)]  # ((k-1)100+step)*2 fs
    assert [t for t, _, _ in traces[0]] == pytest.approx([t for t, _ in expected])
    volumes = [3.6**3 * s**3 / 4 for _, s in expected]
    assert [v for _, v, _ in traces[0]] == pytest.approx(volumes, rel=1e-12)
    npt = {"data": {"structures": "x.xyz"}, "exploration": {"ensemble": "npt", "steps": 100}}
    config = from_dict({**npt, "report": {"plots": True}}, tmp_path)
    lines = cell_section(state, config, tmp_path)
    assert f"| 2 | 2 | {min(volumes[2:]):.2f} | {sum(volumes[2:]) / 2:.2f} |" in "\n".join(lines)
    assert (tmp_path / "volume.png").is_file()
    nvt = from_dict({"data": {"structures": "x.xyz"}}, tmp_path)
    assert cell_section(state, nvt, tmp_path) == []
