"""The uncertainty stages: fit and calibrate the uncertainty model, and measure the errors of
iteration k's model on held-out frames (validation, calibration, test, the batch just labelled)."""

from __future__ import annotations

import os
import shutil

from uq_bias.campaign import uq as unc
from uq_bias.campaign.stages.context import (
    Context,
    data_roles,
    load_uncertainty,
    model_paths,
    read_metrics,
    test_frames,
    uncertainty_dir,
)
from uq_bias.campaign.state import read_frames, read_json, write_json


def fit_uncertainty(ctx: Context, k: int) -> None:
    """Fit the uncertainty on the training frames and calibrate it on the calibration frames
    (never used for early stopping or training)."""
    roles = data_roles(ctx)
    model, calibration = unc.fit(
        [str(p) for p in model_paths(ctx, k)], roles.train, roles.calibration, ctx.config
    )
    target = uncertainty_dir(ctx, k)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    unc.save(model, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    write_json(ctx.dir(k) / "calibration.json", calibration)


def metrics(ctx: Context, k: int) -> None:
    """Errors of iteration k's model, with its uncertainties, on the held-out frames of each
    role (``valid``: early stopping; ``calibration``; ``test``: ``data.test`` when given) and,
    from iteration 2 on, on the batch labelled in iteration k - 1 before and after it was
    learnt (``previous_batch``: model k - 1's errors, from ``evaluate``, and model k's)."""
    roles = data_roles(ctx)
    model = load_uncertainty(ctx, k)
    predictions = unc.predict(model, roles.valid)
    result = {
        "iteration": k,
        "n_labelled": len(ctx.state.labelled()),
        "n_roles": {
            "train": len(roles.train),
            "valid": len(roles.valid),
            "calibration": len(roles.calibration),
        },
        "valid": _error_metrics(ctx, predictions),
    }
    if roles.calibration is not roles.valid:
        result["calibration"] = _error_metrics(ctx, unc.predict(model, roles.calibration))
    test = test_frames(ctx)
    if test:
        result["test"] = _error_metrics(ctx, unc.predict(model, test))
    before = read_metrics(ctx.state, k - 1).get("batch") if k >= 2 else None
    batch = read_frames(ctx.dir(k - 1) / "labelled.extxyz") if before else []
    if batch:
        after = _error_metrics(ctx, unc.predict(model, batch))
        result["previous_batch"] = {"iteration": k - 1, "before": before, "after": after}
    write_json(ctx.dir(k) / "predictions.json", unc.atom_errors(predictions))
    write_json(ctx.dir(k) / "metrics.json", result)


def evaluate(ctx: Context, k: int) -> None:
    """Errors of iteration k's model on the frames just labelled (which it has not seen)."""
    frames = read_frames(ctx.dir(k) / "labelled.extxyz")
    path = ctx.dir(k) / "metrics.json"
    metrics_k = read_json(path, {})
    if frames:
        predictions = unc.predict(load_uncertainty(ctx, k), frames)
        metrics_k["batch"] = _error_metrics(ctx, predictions)
    write_json(path, metrics_k)


def _error_metrics(ctx: Context, predictions: unc.Predictions) -> dict:
    """:func:`uq_bias.campaign.uq.error_metrics`, the stress NLL and miscalibration area read
    with the campaign's calibration method and alpha (what its U means)."""
    c = ctx.config.calibration
    return unc.error_metrics(predictions, c.method, c.alpha)
