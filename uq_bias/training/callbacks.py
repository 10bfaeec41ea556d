"""Lightning callbacks used by :func:`uq_bias.training.fit`."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning

from uq_bias.atomic import atomic_path


class EpochCSVLogger(lightning.Callback):
    """Write one CSV row per validation (epoch 0 = before training) with the module's ``record``.

    The file is rewritten (atomically) after every validation, so that every row has every column.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not pl_module.record:
            return
        self.rows.append(dict(pl_module.record))
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
