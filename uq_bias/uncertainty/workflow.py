"""Fit, calibrate, save and report in one call: what `uq-bias calibrate` runs.

Writes into the folder ``out``: the saved uncertainty model (``state.pt``, ``uncertainty.json``),
``calibration.json`` (the report) and ``reliability.png`` (the plot).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ase import Atoms

from uq_bias.uncertainty.base import UncertaintyModel
from uq_bias.uncertainty.calibration import CalibrationOptions, labels_of
from uq_bias.uncertainty.gradient import UncertaintyOptions
from uq_bias.uncertainty.io import save

REPORT_FILE = "calibration.json"
PLOT_FILE = "reliability.png"


def _read(frames: str | Path | Sequence[Atoms], what: str) -> list[Atoms]:
    if isinstance(frames, (str, Path)):
        from uq_bias.io_structures import read_structures

        return read_structures(frames, f"the {what} file")
    return [frames] if isinstance(frames, Atoms) else list(frames)


def _name(frames, what: str, flag: str) -> str:
    """How errors name an input: "validation frames 'v.xyz' (--valid)", or "the validation
    frames" when frames were given."""
    return f"{what} {str(frames)!r} ({flag})" if isinstance(frames, (str, Path)) else f"the {what}"


def build(models: Sequence, options: UncertaintyOptions | None = None) -> UncertaintyModel:
    """An unfitted uncertainty model: an :class:`Ensemble` for several models (only
    ``options.head`` applies), else a :class:`GradientFeatureUncertainty`."""
    from uq_bias.uncertainty.ensemble import Ensemble
    from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

    options = options or UncertaintyOptions()
    models = list(models)
    if not models:
        raise ValueError("give at least one model")
    if len(models) > 1:
        return Ensemble(models, head=options.head)
    return GradientFeatureUncertainty(models[0], **dataclasses.asdict(options))


def fit_and_calibrate(
    models: Sequence,
    valid: str | Path | Sequence[Atoms],
    out: str | Path,
    *,
    train: str | Path | Sequence[Atoms] | None = None,
    options: UncertaintyOptions | None = None,
    calibration: CalibrationOptions | None = None,
) -> tuple[UncertaintyModel, dict]:
    """Build (see :func:`build`, ``options``), fit on ``train`` (gradient features only),
    calibrate on ``valid`` (``calibration``), save to ``out`` and write the report; returns
    (model, report).

    All inputs are read and checked before anything is written.
    """
    from uq_bias.graph import check_frames
    from uq_bias.io_structures import check_disjoint
    from uq_bias.outputs import check_writable
    from uq_bias.uncertainty.calibration import calibrate
    from uq_bias.uncertainty.report import write_json, write_plot

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out (--out) {str(out)!r} is a file; give a folder for the saved model")
    check_writable(out, "out (--out)", folder=True)  # a file on its way, no permission
    model = build(models, options)
    valid_frames = _read(valid, "validation")
    source = _name(valid, "validation frames", "--valid")
    check_frames(valid_frames, source, model.atomic_numbers)
    for k, atoms in enumerate(valid_frames):
        try:
            labels_of(atoms, k)  # labelled, before any fit
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err
    if hasattr(model, "fit"):
        if train is None:
            raise ValueError("gradient-feature uncertainty needs training frames (--train)")
        train_frames = _read(train, "training")
        where = _name(train, "training frames", "--train")
        check_frames(train_frames, where, model.atomic_numbers)
        try:
            check_disjoint(train_frames, valid_frames)
        except ValueError as err:
            raise ValueError(f"{source} and {where}: {err}") from err
        model.fit(train_frames)
    report = calibrate(
        model, valid_frames, **dataclasses.asdict(calibration or CalibrationOptions())
    )
    save(model, out)
    write_json(report, out / REPORT_FILE)
    write_plot(report, out / PLOT_FILE)
    return model, report
