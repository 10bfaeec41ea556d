"""Lightning's distributed path for real: DDP (ddp_spawn, 2 CPU processes, gloo) gives the epoch
metrics of one process on the same data, because sums and counts are reduced before the ratios
(torchmetrics), and each validation frame is seen exactly once over the ranks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from reference_data import rattled_cu_frames

from uq_bias.models import load_model
from uq_bias.training import FitOptions, TrainerOptions, build_mace, compute_statistics, fit

CUTOFF = 3.5


@pytest.fixture(scope="module")
def frames():
    """4 training and 3 validation 4-atom Cu3Al cells (EMT): 3 does not split evenly over 2
    ranks, so a padding sampler would count one validation frame twice."""
    data = rattled_cu_frames(7, seed=11, amplitude=0.1, size=(1, 1, 1))
    return data[:4], data[4:]


def _fit(frames, strategy: str, devices: int, batch_size: int, log):
    train, valid = frames
    mace = build_mace(
        [13, 29], cutoff=CUTOFF, preset="tiny", statistics=compute_statistics(train, CUTOFF)
    )
    options = FitOptions(max_epochs=1, batch_size=batch_size, ema_decay=0.5, seed=3)
    trainer = TrainerOptions(
        accelerator="cpu", devices=devices, strategy=strategy, progress_bar=False
    )
    return fit(load_model(mace), train, valid, options, trainer, log=log)


def test_ddp_spawn_epoch_metrics_equal_one_process(frames, tmp_path):
    # one step per epoch either way: 4 frames in one batch, or 2 ranks x 2 frames (same mean)
    one = _fit(frames, "auto", 1, 4, tmp_path / "one.csv")
    ddp = _fit(frames, "ddp_spawn", 2, 2, tmp_path / "ddp.csv")
    assert [row["epoch"] for row in ddp.history] == [0, 1]  # came back from the workers
    for a, b in zip(one.history, ddp.history):
        names = sorted(k for k in a if k.startswith("val_"))
        assert names == sorted(k for k in b if k.startswith("val_")) and "val_stress_rmse" in names
        np.testing.assert_allclose([b[k] for k in names], [a[k] for k in names], rtol=1e-8)
    with open(tmp_path / "ddp.csv") as handle:  # written by rank 0 in a worker
        rows = list(csv.DictReader(handle))
    assert float(rows[1]["val_loss"]) == pytest.approx(ddp.history[1]["val_loss"], rel=1e-12)
    assert ddp.best_loss == pytest.approx(one.best_loss, rel=1e-8)
