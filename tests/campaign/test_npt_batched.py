"""The Cu-Al NPT recipe (EMT labels) as a campaign on the batched engine, at tiny size: the
walkers' cells move under stochastic cell rescaling with the bias stress, and the models it
writes predict stress: mace.calculators.MACECalculator gives the stress our calculator gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from uq_bias import Calculator
from uq_bias.campaign import run
from uq_bias.campaign.state import CampaignState, read_frames

RECIPE = Path(__file__).parents[2] / "recipes" / "cual_npt_emt.yaml"


def test_cual_npt_recipe_runs_on_the_batched_engine(tmp_path):
    data = yaml.safe_load(RECIPE.read_text())
    start = RECIPE.parent / data["data"]["structures"]
    data["data"] |= {"structures": str(start), "initial_frames": 4}
    data["model"] |= {"preset": "tiny", "cutoff": 3.5}
    data["training"] |= {"max_epochs": 2, "batch_size": 4}
    data["exploration"] |= {
        "walkers": 2,
        "steps": 12,
        "sample_every": 3,
        "engine": "batched",
        "npt_cell": "full",
        "pdamp": 50.0,
        "bias": {"tau_rel": 0.3, "window": 3},
    }
    data["selection"] |= {"batch_size": 3}
    data["stop"] = {"iterations": 1}
    data["executor"] = {"kind": "inprocess"}
    path = tmp_path / "cual.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run(path, progress=None)
    assert result.reason == "1 iterations done"
    state = CampaignState(result.folder)
    pool = read_frames(state.iteration_dir(1) / "candidates.extxyz")
    assert pool and all("model_stress" in frame.info for frame in pool)
    starts = {round(frame.get_volume(), 6) for frame in state.labelled()[:4]}
    moved = [frame for frame in pool if round(frame.get_volume(), 6) not in starts]
    assert moved, "the batched barostat moved no cell"
    cells = np.array([frame.cell.array for frame in pool])
    assert np.isfinite(cells).all()

    from mace.calculators import MACECalculator

    model = sorted(Path(result.folder).glob("iterations/*/model/member_0.model"))[-1]
    frame = pool[-1].copy()
    frame.calc = MACECalculator(model_paths=str(model), device="cpu", default_dtype="float64")
    theirs = frame.get_stress()
    frame.calc = Calculator(str(model))
    np.testing.assert_allclose(frame.get_stress(), theirs, rtol=1e-5, atol=1e-8)
