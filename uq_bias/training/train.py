"""Train an adapter-wrapped model with Lightning (:func:`fit`) and MACE model files (:func:`train`).

:func:`train` reads extended-XYZ files, builds a fresh ScaleShiftMACE from data statistics (or
loads ``init`` to fine-tune), fits it and writes a normal MACE model file atomically (temporary
file in the same directory, then ``os.replace``), which ``mace.calculators.MACECalculator`` loads.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import lightning
import torch
from ase import Atoms
from ase.data import chemical_symbols

from uq_bias.atomic import atomic_path
from uq_bias.interrupts import lightning_interrupts
from uq_bias.models import AtomisticModel, load_model
from uq_bias.models.mace import MACEAdapter  # light: mace itself loads only when one is built
from uq_bias.options import option
from uq_bias.training.build import PRESETS, DataStatistics, ModelOptions, build_mace
from uq_bias.training.callbacks import EarlyStoppingFromStart, EpochCSVLogger, InterruptRecorder
from uq_bias.training.datamodule import AtomsDataModule
from uq_bias.training.labels import (
    LabelKeys,
    check_disjoint,
    check_elements,
    check_stress_found,
    elements,
    labelled,
    read_frames,
)
from uq_bias.training.loss import LossWeights
from uq_bias.training.module import AtomisticLitModule
from uq_bias.training.statistics import compute_statistics

DTYPES = {"float64": torch.float64, "float32": torch.float32}
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerOptions:
    """Passed to ``lightning.Trainer`` unchanged (multi-GPU / multi-node is configuration only)."""

    accelerator: str = option("auto", "Lightning accelerator: auto, cpu, gpu, ...")
    devices: int | str | list[int] = option(
        1,
        "Lightning devices: a count, a list or auto. auto takes every GPU and, in a script, "
        "strategy ddp, which re-runs the command line: inside `uq-bias run` use a count with "
        "strategy ddp_spawn (docs/scaling.md).",
    )
    num_nodes: int = option(1, "Lightning nodes for multi-node training.")
    strategy: str = option("auto", "Lightning strategy: auto, ddp, ddp_spawn, ...")
    progress_bar: bool = option(True, "Show Lightning's progress bar.")
    deterministic: bool | None = option(
        None,
        "Lightning's deterministic; true also switches torch to deterministic algorithms for the "
        "whole process (and fails on GPU ops without one). CPU runs repeat exactly without it.",
    )

    def __post_init__(self):
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {self.num_nodes}")


@dataclass(frozen=True)
class FitOptions:
    """Optimisation settings of :func:`fit` (see :class:`AtomisticLitModule` for their meaning)."""

    max_epochs: int = option(100, "Training epochs (0: only validate the starting model).")
    batch_size: int = option(4, "Structures per batch.")
    lr: float = option(1e-2, "Learning rate of Adam (AMSGrad).")
    weight_decay: float = option(0.0, "Adam weight decay.")
    weights: LossWeights = option(LossWeights(), "Weights of the loss terms.")
    ema_decay: float | None = option(
        0.99, "Decay of the exponential moving average of the weights; null: no EMA."
    )
    scheduler: Literal["plateau", "cosine", "none"] = option(
        "plateau", "Learning-rate schedule: plateau (on val_loss), cosine (to 0), none."
    )
    patience: int = option(20, "Early-stopping patience on val_loss.", unit="epochs")
    seed: int = option(0, "Seed of the model initialisation, shuffling and Lightning.")
    fine_tune_lr: float | None = option(
        None,
        "Learning rate when training starts from a trained model (train(init=...): campaign "
        "iterations after the first, model.file); null: lr. Lower it for a pre-trained "
        "foundation model, or when a few epochs are too few to recover from the restart.",
    )
    refit_reference_energies: bool = option(
        True,
        "When training starts from a trained model (train(init=...)), first fit one energy "
        "offset per element to the training labels and add it to the model's isolated-atom "
        "energies (MACE; uq_bias.training.reference_energies): a model of another reference "
        "method then starts near the new energies instead of tens of eV/atom off.",
    )
    keep_initial: bool = option(
        False,
        "Let the starting model win when no epoch beats its validation loss (new labels may then "
        "change nothing); false returns the best trained epoch.",
    )

    def __post_init__(self):
        if self.max_epochs < 0:
            raise ValueError(f"max_epochs must be >= 0, got {self.max_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or null, got {self.ema_decay}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"FitOptions: weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
        for name in ("lr", "fine_tune_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"FitOptions: {name} must be a number > 0, got {value!r}")

    def for_fine_tuning(self) -> FitOptions:
        """These options with ``lr`` set to ``fine_tune_lr`` (when given)."""
        return self if self.fine_tune_lr is None else replace(self, lr=self.fine_tune_lr)


@dataclass
class FitResult:
    """The trained model (best validation weights loaded) and one metrics dict per epoch."""

    model: AtomisticModel
    history: list[dict[str, float]]
    best_loss: float


def fit(
    model: AtomisticModel,
    train_frames: Sequence[Atoms],
    valid_frames: Sequence[Atoms],
    options: FitOptions | None = None,
    trainer_options: TrainerOptions | None = None,
    log: str | Path | None = None,
) -> FitResult:
    """Train ``model`` in place on labelled frames; validation before training is epoch 0.

    Frames carry their labels in ``atoms.calc`` or under the default keys (see
    :func:`~uq_bias.training.labels.labelled`); a frame without energy or forces is an error.

    Early stopping watches val_loss (``options.patience`` epochs); the returned model holds the
    (EMA) weights of the best trained epoch, or, with ``options.keep_initial``, of the best
    validation epoch including the initial weights (then early stopping must beat them too).
    ``options.lr`` is used as it is: :func:`train` switches to ``fine_tune_lr`` itself.
    """
    options, trainer_options = options or FitOptions(), trainer_options or TrainerOptions()
    train_frames = _frames(train_frames, "training", LabelKeys())
    valid_frames = _frames(valid_frames, "validation", LabelKeys())
    check_elements(train_frames, model.atomic_numbers, "the training data", "the model")
    check_elements(valid_frames, model.atomic_numbers, "the validation data", "the model")
    check_disjoint(train_frames, valid_frames)
    if options.weights.stress > 0:
        check_stress_found(train_frames, "the training data")
    lightning.seed_everything(options.seed, workers=True, verbose=False)
    module = AtomisticLitModule(
        model,
        weights=options.weights,
        lr=options.lr,
        weight_decay=options.weight_decay,
        ema_decay=options.ema_decay,
        scheduler=options.scheduler,
        max_epochs=options.max_epochs,
        keep_initial=options.keep_initial,
    )
    data = AtomsDataModule(
        train_frames,
        valid_frames,
        model.cutoff,
        model.atomic_numbers,
        batch_size=options.batch_size,
        dtype=model.dtype,
        seed=options.seed,
    )
    csv_logger = EpochCSVLogger(log) if log is not None else None
    early_stopping = EarlyStoppingFromStart("val_loss", patience=options.patience)
    recorder = InterruptRecorder()
    training = options.max_epochs > 0
    trainer = lightning_trainer(
        running(trainer_options, options.max_epochs),
        max_epochs=options.max_epochs,
        callbacks=[early_stopping, recorder] + ([csv_logger] if csv_logger else []),
        inference_mode=False,
        num_sanity_val_steps=-1,  # the whole validation set before training: epoch 0
    )
    with lightning_interrupts(recorder):  # Ctrl-C / SIGTERM: the interrupt, not sys.exit(1)
        if training:
            trainer.fit(module, datamodule=data)
        else:
            trainer.validate(module, datamodule=data, verbose=False)
    if training and module.best_state is None:  # with keep_initial: the start was not finite
        losses = [h.get("val_loss") for h in module.history[-3:]]
        raise ValueError(
            f"training diverged: no trained epoch had a finite validation loss (last {losses}); "
            f"nothing was saved. Lower the learning rate in effect ({options.lr:g}: lr, or "
            "fine_tune_lr when training starts from a model file)"
        )
    if module.best_state is not None:
        model.load_state_dict(module.best_state)
    return FitResult(model=model, history=module.history, best_loss=module.best_loss)


def lightning_trainer(options: TrainerOptions, **kwargs) -> lightning.Trainer:
    """A ``lightning.Trainer`` with ``options`` (no logger, checkpoints or model summary) and
    ``kwargs``; ValueError naming the options when Lightning refuses them on this machine (a
    GPU accelerator without a GPU, devices it cannot give, an unknown strategy)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    settings = {
        "accelerator": options.accelerator,
        "devices": options.devices,
        "num_nodes": options.num_nodes,
        "strategy": options.strategy,
        "enable_progress_bar": options.progress_bar,
        "deterministic": options.deterministic,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        **kwargs,
    }
    try:
        return lightning.Trainer(**settings)
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        names = ("accelerator", "devices", "num_nodes", "strategy")
        chosen = ", ".join(f"{k}={settings[k]!r}" for k in names)
        raise ValueError(
            f"Lightning cannot run with {chosen} here: {err}; use accelerator auto or cpu, "
            "devices 1, or run where those devices are"
        ) from err


def _refit_reference_energies(model: AtomisticModel, frames: Sequence[Atoms]) -> None:
    """Shift the model's isolated-atom energies by the offsets fitted to ``frames`` (logged)."""
    from uq_bias.training.reference_energies import (
        energy_offsets,
        has_reference_energies,
        shift_reference_energies,
    )

    if not has_reference_energies(model):
        _log.info("fine-tuning: %s keeps no isolated-atom energies to refit", type(model).__name__)
        return
    offsets = energy_offsets(model, frames)
    shift_reference_energies(model, offsets)
    shown = ", ".join(f"{chemical_symbols[z]} {c:+.4g}" for z, c in offsets.items())
    _log.info("fine-tuning: isolated-atom energies shifted by %s eV", shown)


def running(options: TrainerOptions, max_epochs: int) -> TrainerOptions:
    """The settings a fit of ``max_epochs`` runs with: validation alone (0 epochs) runs in this
    process on one device, with nothing to distribute."""
    return options if max_epochs > 0 else replace(options, devices=1, num_nodes=1, strategy="auto")


def check_trainer(options: TrainerOptions, max_epochs: int) -> None:
    """Raise the ValueError of :func:`lightning_trainer` for the settings a fit of
    ``max_epochs`` runs with, now, before any work. ``deterministic`` is left out: Lightning
    sets it process-wide when a Trainer is built."""
    with quiet_lightning():
        lightning_trainer(replace(running(options, max_epochs), deterministic=None))


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's info lines (GPU available, tips) off inside; the level restored after."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_model(model: AtomisticModel | torch.nn.Module, path: str | Path) -> Path:
    """Write ``model`` atomically: the wrapped MACE module for a MACE adapter, else the module."""
    path = Path(path)
    obj = model.model if isinstance(model, MACEAdapter) else model
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def _frames(data: str | Path | Sequence[Atoms], what: str, keys: LabelKeys) -> list[Atoms]:
    if isinstance(data, (str, Path)):
        return read_frames(data, keys)
    frames = list(data)
    if not frames:
        raise ValueError(f"no {what} frames given")
    return [labelled(a, f"{what} frame {k}", keys) for k, a in enumerate(frames)]


def _check_output(out: Path) -> None:
    if out.is_dir():
        raise ValueError(
            f"output {str(out)!r} is a directory; give a file name such as model.model"
        )
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the output directory {str(out.parent)!r} does not exist")


def train(
    train: str | Path | Sequence[Atoms],
    valid: str | Path | Sequence[Atoms],
    out: str | Path,
    *,
    init: str | Path | None = None,
    preset: str = ModelOptions.preset,
    cutoff: float = ModelOptions.cutoff,
    dtype: str = ModelOptions.dtype,
    statistics: DataStatistics | None = None,
    keys: LabelKeys | None = None,
    options: FitOptions | None = None,
    trainer_options: TrainerOptions | None = None,
    log: str | Path | None = "auto",
) -> Path:
    """Train a MACE model on extended-XYZ files (or labelled frames) and save it to ``out``.

    Args:
        train, valid: extended-XYZ paths or lists of ``ase.Atoms`` with labels.
        out: the model file to write (a normal MACE model file).
        init: a MACE model file to fine-tune (at ``options.fine_tune_lr``); ``preset``,
            ``cutoff`` and ``statistics`` are then ignored (the model's own are kept).
        preset: model size for a fresh model, one of :data:`uq_bias.training.build.PRESETS`.
        cutoff: neighbour cutoff of a fresh model, A.
        dtype: 'float64' or 'float32'.
        statistics: data statistics of a fresh model (default: computed from ``train``).
        keys: where the labels are (e.g. ``LabelKeys.with_prefix('REF_')``).
        log: CSV of the per-epoch losses and errors; 'auto' puts ``<out stem>_metrics.csv``
            beside ``out``; None writes none.

    Returns the path written. All inputs are checked before anything is written.
    """
    keys, options = keys or LabelKeys(), options or FitOptions()
    trainer_options = trainer_options or TrainerOptions()
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    if init is None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    out = Path(out)
    _check_output(out)
    train_frames = _frames(train, "training", keys)
    valid_frames = _frames(valid, "validation", keys)
    check_elements(valid_frames, elements(train_frames), "the validation data", "the training data")
    if init is not None:
        model = load_model(init, dtype=DTYPES[dtype])
    else:
        stats = statistics or compute_statistics(train_frames, cutoff)
        mace = build_mace(
            elements(train_frames),
            cutoff=cutoff,
            preset=preset,
            statistics=stats,
            dtype=DTYPES[dtype],
            seed=options.seed,
        )
        model = load_model(mace)
    if log == "auto":
        log = out.with_name(f"{out.stem}_metrics.csv")
    if init is not None:
        options = options.for_fine_tuning()
        if options.refit_reference_energies and options.max_epochs > 0:  # 0: the model as given
            check_elements(train_frames, model.atomic_numbers, "the training data", "the model")
            _refit_reference_energies(model, train_frames)
    result = fit(model, train_frames, valid_frames, options, trainer_options, log)
    return save_model(result.model, out)
