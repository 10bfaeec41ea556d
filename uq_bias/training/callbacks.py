"""Lightning callbacks used by :func:`uq_bias.training.fit`.

The per-epoch CSV is our own small callback rather than Lightning's ``CSVLogger``: that one
writes ``metrics.csv`` under a versioned folder it chooses, one row per logging call, not
atomically; the user asks for one file with one row per epoch (epoch 0 = before training).
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning
import torch
from lightning.pytorch.callbacks import EarlyStopping

from uq_bias.atomic import atomic_path


class EpochCSVLogger(lightning.Callback):
    """Write one CSV row per validation (epoch 0 = before training) with the module's ``record``.

    The file is rewritten (atomically) after every validation, so that every row has every column.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not pl_module.record:
            return
        self.rows.append(dict(pl_module.record))
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)


class EarlyStoppingFromStart(EarlyStopping):
    """Early stopping that counts the model before training as the score to beat: the first
    validation (the sanity check over the whole validation set, epoch 0) sets ``best_score``."""

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        super().on_sanity_check_end(trainer, pl_module)
        self.best_score = torch.tensor(pl_module.best_loss, dtype=torch.float64)


class InterruptRecorder(lightning.Callback):
    """Remembers the exception Lightning saw (``on_exception``), so that the ``sys.exit(1)``
    it makes of a Ctrl-C can be turned back into the interrupt
    (:func:`uq_bias.interrupts.lightning_interrupts`)."""

    def __init__(self) -> None:
        self.exception: BaseException | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception
