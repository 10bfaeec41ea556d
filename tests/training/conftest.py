"""Shared training fixtures: small EMT-labelled Cu/Al files and one model trained by the CLI."""

from __future__ import annotations

import ase.io
import pytest
import torch
from reference_data import label, rattled_cu_frames

CUTOFF = 3.5
EPOCHS = 2


def _fast_args(tmp, out, *extra) -> list[str]:
    """`uq-bias train` arguments that train a tiny model in seconds."""
    return [
        "train",
        "--train", str(tmp / "train.extxyz"),
        "--valid", str(tmp / "valid.extxyz"),
        "--out", str(out),
        "--preset", "tiny",
        "--cutoff", str(CUTOFF),
        "--max-epochs", str(EPOCHS),
        "--batch-size", "4",
        "--ema-decay", "0.5",
        "--no-progress-bar",
        "--accelerator", "cpu",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def fast_args():
    """fast_args(data_dir, out, *extra): `uq-bias train` arguments for a tiny, quick run."""
    return _fast_args


@pytest.fixture(scope="session")
def fast_kwargs():
    """The keyword arguments of uq_bias.training.train equal to `fast_args` (same seed 0)."""
    from uq_bias.training import FitOptions, TrainerOptions

    return {
        "preset": "tiny",
        "cutoff": CUTOFF,
        "options": FitOptions(max_epochs=EPOCHS, batch_size=4, ema_decay=0.5),
        "trainer_options": TrainerOptions(accelerator="cpu", progress_bar=False),
    }


@pytest.fixture(scope="session")
def mixed_frames():
    """Two EMT-labelled periodic Cu/Al cells (with stress) and one GFN2-xTB water (no stress)."""
    from ase.build import molecule
    from tblite.ase import TBLite

    water = molecule("H2O")
    water.rattle(0.05, seed=2)
    cells = rattled_cu_frames(2, seed=3, size=(2, 1, 1))
    return cells + [label(water, TBLite(method="GFN2-xTB", verbosity=0))]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """train.extxyz (8 frames) and valid.extxyz (3 frames): 4-atom rattled Cu3Al cells, EMT."""
    tmp = tmp_path_factory.mktemp("training_data")
    frames = rattled_cu_frames(11, seed=1, amplitude=0.1, size=(1, 1, 1))
    ase.io.write(tmp / "train.extxyz", frames[:8])
    ase.io.write(tmp / "valid.extxyz", frames[8:])
    return tmp


@pytest.fixture(scope="session")
def trained(data_dir):
    """The model file written by `uq-bias train` (seed 0) and its metrics CSV."""
    from uq_bias.cli import main

    out = data_dir / "cli.model"
    assert main(_fast_args(data_dir, out)) == 0
    return out


@pytest.fixture
def restore_default_dtype():
    """MACECalculator sets torch's global default dtype; put it back after the test."""
    saved = torch.get_default_dtype()
    yield
    torch.set_default_dtype(saved)
