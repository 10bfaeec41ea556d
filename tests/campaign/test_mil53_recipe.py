"""The MIL-53(Al) recipe (GFN1-xTB labels under periodic boundaries, batched NPT with a full
cell) as a campaign at tiny size: every label is a real tblite calculation of the 76-atom
framework, the walkers' cells move, and the models it writes are MACE files whose stress
by ``mace.calculators.MACECalculator`` equals our calculator's on the same frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from uq_bias import Calculator
from uq_bias.campaign import run
from uq_bias.campaign.state import CampaignState, read_frames

pytest.importorskip("tblite")
RECIPES = Path(__file__).parents[2] / "recipes"


def test_mil53_recipe_runs_at_tiny_size(tmp_path):
    data = yaml.safe_load((RECIPES / "mil53_npt_gfn1.yaml").read_text())
    data["data"] |= {"structures": str(RECIPES / data["data"]["structures"]), "initial_frames": 5}
    data["model"] |= {"preset": "tiny", "cutoff": 3.0}
    data["training"] |= {"max_epochs": 2}
    data["exploration"] |= {"walkers": 1, "steps": 6, "sample_every": 2, "pdamp": 20.0}
    data["exploration"]["bias"] |= {"window": 2}
    data["selection"] |= {"batch_size": 2}
    data["stop"] = {"iterations": 1}
    data["executor"] = {"kind": "inprocess"}
    path = tmp_path / "mil53.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run(path, progress=None)
    assert result.reason == "1 iterations done"

    state = CampaignState(result.folder)
    labelled = state.labelled()
    assert len(labelled) == 7 and all(len(a) == 76 for a in labelled)
    assert all(np.isfinite(a.get_stress()).all() for a in labelled)
    pool = read_frames(state.iteration_dir(1) / "candidates.extxyz")
    start = labelled[0].get_volume()
    assert pool and any(abs(a.get_volume() - start) > 1e-6 for a in pool), "no cell moved"

    from mace.calculators import MACECalculator

    model = sorted(Path(result.folder).glob("iterations/*/model/member_0.model"))[-1]
    calc = MACECalculator(model_paths=str(model), device="cpu", default_dtype="float64")
    frame = labelled[-1].copy()
    frame.calc = calc
    theirs = frame.get_stress()
    ours = labelled[-1].copy()
    ours.calc = Calculator(str(model))
    assert theirs.shape == (6,) and np.isfinite(theirs).all()
    np.testing.assert_allclose(ours.get_stress(), theirs, rtol=1e-5, atol=1e-8)
