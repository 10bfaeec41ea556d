"""Lightning's distributed path for real: the campaign's training stage, told by its YAML to
use ddp_spawn on 2 CPU processes (gloo), gives the epoch metrics and the model of one process
on the same data, because sums and counts are reduced before the ratios (torchmetrics) and each
validation frame is seen exactly once over the ranks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from reference_data import rattled_cu_frames

from uq_bias.campaign import from_dict
from uq_bias.campaign.roles import split_roles
from uq_bias.campaign.stages import Context, model_paths
from uq_bias.campaign.stages import train as train_stage
from uq_bias.campaign.state import CampaignState, with_id
from uq_bias.training import FitOptions, TrainerOptions, train

VALID, CALIBRATION = 0.35, 0.15


def _sizes(frames, seed):
    roles = split_roles(frames, VALID, CALIBRATION, seed)
    return [len(roles.train), len(roles.valid), len(roles.calibration)]


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("n_valid", [3, 1])
def test_campaign_training_with_ddp_spawn_equals_one_process(tmp_path, n_valid):
    frames = [with_id(a) for a in rattled_cu_frames(8, seed=11, amplitude=0.1, size=(1, 1, 1))]
    # a seed whose roles are 4 training frames, n_valid validation frames and the rest
    # calibration: one step of 2 x 2 frames under DDP = one step of 4 in one process; 3
    # validation frames do not split evenly, so a padding sampler would count one twice; 1
    # frame for 2 ranks left one rank without any (Lightning refused to validate)
    sizes = [4, n_valid, 4 - n_valid]
    seed = next(s for s in range(500) if _sizes(frames, s) == sizes)
    config = from_dict(
        {
            "seed": seed,
            "data": {
                "structures": "x.xyz",
                "valid_fraction": VALID,
                "calibration_fraction": CALIBRATION,
            },
            "model": {"preset": "tiny", "cutoff": 3.5},
            "training": {"max_epochs": 1, "batch_size": 2, "ema_decay": 0.5},
            "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"},
        },
        tmp_path,
    )
    state = CampaignState(tmp_path / "campaign")
    state.add_labelled(frames, 0)
    train_stage(Context(state, config, None, []), 1)
    (member,) = model_paths(Context(state, config, None, []), 1)

    roles = split_roles(state.labelled(), VALID, CALIBRATION, seed)
    train_frames, valid_frames = roles.train, roles.valid
    options = FitOptions(max_epochs=1, batch_size=4, ema_decay=0.5, seed=seed + 1000)
    one = train(
        train_frames,
        valid_frames,
        tmp_path / "one.model",
        preset="tiny",
        cutoff=3.5,
        options=options,
        trainer_options=TrainerOptions(accelerator="cpu", progress_bar=False),
        log=tmp_path / "one.csv",
    )
    ddp_rows = _rows(member.with_name("member_0_metrics.csv"))  # written by rank 0
    one_rows = _rows(tmp_path / "one.csv")
    assert [r["epoch"] for r in ddp_rows] == [r["epoch"] for r in one_rows] == ["0", "1"]
    for a, b in zip(one_rows, ddp_rows):
        names = sorted(k for k in a if k.startswith("val_"))
        assert "val_stress_rmse" in names and names == sorted(k for k in b if k.startswith("val_"))
        np.testing.assert_allclose(
            [float(b[k]) for k in names], [float(a[k]) for k in names], rtol=1e-8
        )
    # the saved model is the best (EMA) state, which came back from the workers
    ddp_state = torch.load(member, weights_only=False).state_dict()
    one_state = torch.load(one, weights_only=False).state_dict()
    for name, value in one_state.items():
        if value.is_floating_point():
            torch.testing.assert_close(ddp_state[name], value, rtol=1e-8, atol=1e-10)
