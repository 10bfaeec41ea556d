"""Fit, calibrate, save and report in one call: what `uq-bias calibrate` runs.

Writes into the folder ``out``: the saved uncertainty model (``state.pt``, ``uncertainty.json``),
``calibration.json`` (the report) and ``reliability.png`` (the plot).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ase import Atoms

from uq_bias.uncertainty.base import UncertaintyModel

REPORT_FILE = "calibration.json"
PLOT_FILE = "reliability.png"


def _read(frames: str | Path | Sequence[Atoms], what: str) -> list[Atoms]:
    if isinstance(frames, (str, Path)):
        from ase.io import read

        path = Path(frames)
        if not path.is_file():
            raise FileNotFoundError(f"the {what} file {str(path)!r} does not exist")
        return list(read(path, index=":"))
    return [frames] if isinstance(frames, Atoms) else list(frames)


def build(
    models: Sequence,
    *,
    method: str = "posterior",
    features: str = "last_layer",
    sketch_dim: int = 512,
    sigma: float = 1e-2,
    seed: int = 0,
    head: str | int | None = None,
) -> UncertaintyModel:
    """An unfitted uncertainty model: an :class:`Ensemble` for several models (``method`` is then
    ignored), else a :class:`GradientFeatureUncertainty`."""
    from uq_bias.uncertainty.ensemble import Ensemble
    from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

    models = list(models)
    if not models:
        raise ValueError("give at least one model")
    if len(models) > 1:
        return Ensemble(models, head=head)
    return GradientFeatureUncertainty(
        models[0],
        method=method,
        features=features,
        sketch_dim=sketch_dim,
        sigma=sigma,
        seed=seed,
        head=head,
    )


def fit_and_calibrate(
    models: Sequence,
    valid: str | Path | Sequence[Atoms],
    out: str | Path,
    *,
    train: str | Path | Sequence[Atoms] | None = None,
    calibration: str = "conformal",
    alpha: float = 0.1,
    per_element: bool = False,
    **options,
) -> tuple[UncertaintyModel, dict]:
    """Build (see :func:`build`, ``options``), fit on ``train`` (gradient features only),
    calibrate on ``valid``, save to ``out`` and write the report; returns (model, report).

    All inputs are read and checked before anything is written.
    """
    from uq_bias.uncertainty.calibration import calibrate
    from uq_bias.uncertainty.report import write_json, write_plot

    model = build(models, **options)
    valid_frames = _read(valid, "validation")
    if hasattr(model, "fit"):
        if train is None:
            raise ValueError("gradient-feature uncertainty needs training frames (--train)")
        model.fit(_read(train, "training"))
    report = calibrate(
        model, valid_frames, method=calibration, alpha=alpha, per_element=per_element
    )
    out = Path(out)
    model.save(out)
    write_json(report, out / REPORT_FILE)
    write_plot(report, out / PLOT_FILE)
    return model, report
