"""Training: labels, batching, the Lightning module, data statistics, ensembles and model files.

Heavy backends (mace) load only when a MACE model is built or read.
"""

from __future__ import annotations

from uq_bias.training.build import PRESETS, DataStatistics, build_mace
from uq_bias.training.datamodule import AtomsDataModule, Batch, collate
from uq_bias.training.ensemble import train_ensemble
from uq_bias.training.labels import LabelKeys, labelled, read_frames
from uq_bias.training.loss import LossWeights, Predictions, batch_errors, predict, weighted_loss
from uq_bias.training.module import AtomisticLitModule
from uq_bias.training.statistics import compute_statistics
from uq_bias.training.train import (
    FitOptions,
    FitResult,
    TrainerOptions,
    fit,
    save_model,
    train,
)

__all__ = [
    "PRESETS",
    "AtomisticLitModule",
    "AtomsDataModule",
    "Batch",
    "DataStatistics",
    "FitOptions",
    "FitResult",
    "LabelKeys",
    "LossWeights",
    "Predictions",
    "TrainerOptions",
    "batch_errors",
    "build_mace",
    "collate",
    "compute_statistics",
    "fit",
    "labelled",
    "predict",
    "read_frames",
    "save_model",
    "train",
    "train_ensemble",
    "weighted_loss",
]
