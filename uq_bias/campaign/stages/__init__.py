"""The stages of one campaign iteration, one module each. Each reads the folder, writes its files
atomically.

Every stage is ``stage(ctx, k)`` with a :class:`Context`; :mod:`uq_bias.campaign.loop` decides
which to run and marks them in the journal. Files of iteration k (``iterations/NNN/``)::

    labels/NNNN.extxyz | NNNN.failed.json   one per frame sent to the oracle (kept on a kill)
    labelled.extxyz                         the frames the oracle labelled in this iteration
    roles.json                              frame ids for training, validation, calibration
    model/member_J.model                    the trained model(s) (MACE model files)
    uncertainty/                            the fitted, calibrated uncertainty model
    calibration.json                        calibration factors and metrics
    metrics.json                            errors on validation, calibration and test
                                            frames; on the new batch before and after training
    predictions.json                        validation per-atom errors and uncertainties
    bias_seed.json                          estimated relative-bias window (first walkers)
    walkers/wNN.extxyz + wNN.json           each walker's candidates, why it stopped and its
                                            relative-bias window at the stop
    candidates.extxyz, selection.json, selected.extxyz
"""

from __future__ import annotations

from collections.abc import Callable

from uq_bias.campaign.stages.context import (
    Context,
    data_roles,
    load_uncertainty,
    map_resumable,
    model_paths,
    read_metrics,
    start_structures,
    test_frames,
    uncertainty_dir,
)
from uq_bias.campaign.stages.exploration import (
    REBASE_FRAMES,
    bias_seed,
    bias_states,
    continued_frames,
    explore,
    restart_where,
    resume_frame,
    walker_starts,
)
from uq_bias.campaign.stages.labelling import (
    label,
    label_frames,
    label_initial,
    label_paid,
    labels_begun,
    merge,
    perturbed,
)
from uq_bias.campaign.stages.selection import select
from uq_bias.campaign.stages.training import train
from uq_bias.campaign.stages.uncertainty import evaluate, fit_uncertainty, metrics

STAGES: dict[str, Callable[[Context, int], None]] = {
    "label_initial": label_initial,
    "train": train,
    "uncertainty": fit_uncertainty,
    "metrics": metrics,
    "explore": explore,
    "select": select,
    "label": label,
    "evaluate": evaluate,
    "merge": merge,
}

__all__ = [
    "REBASE_FRAMES",
    "STAGES",
    "Context",
    "bias_seed",
    "bias_states",
    "continued_frames",
    "data_roles",
    "evaluate",
    "explore",
    "fit_uncertainty",
    "label",
    "label_frames",
    "label_initial",
    "label_paid",
    "labels_begun",
    "load_uncertainty",
    "map_resumable",
    "merge",
    "metrics",
    "model_paths",
    "perturbed",
    "read_metrics",
    "restart_where",
    "resume_frame",
    "select",
    "start_structures",
    "test_frames",
    "train",
    "uncertainty_dir",
    "walker_starts",
]
