"""A campaign on disk: one folder, atomic writes, and a journal of finished stages.

Layout of the campaign folder::

    config.yaml                 the validated configuration, as run
    journal.json                finished stages ("3/train", "3/label", ...) and the final state
    log.txt                     what happened, one line per event
    data/labelled.extxyz        every labelled frame exactly once (info: frame_id, iteration)
    data/failures.json          frames the oracle could not label, with the reason
    iterations/NNN/             model, uncertainty, calibration.json, candidates.extxyz,
                                selection.json, metrics.json, walkers/, labels/
    report/report.md, *.png     the report

Every file is written to a temporary file in the same folder and moved into place with
``os.replace``, so a reader (or a resumed campaign) sees the old or the new file, never half of
one. A stage is marked in the journal only after all its files are in place; a stage killed
half-way is redone. Frames carry a content hash ``frame_id`` so that merging is idempotent:
a frame already in the data is never added twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ase import Atoms

from uq_bias.atomic import atomic_path, write_frames, write_json, write_text
from uq_bias.io_structures import frame_id

__all__ = ["CampaignState", "atomic_path", "read_frames", "read_json", "with_id"]
__all__ += ["write_frames", "write_json", "write_text"]  # the package's atomic writers

FRAME_ID = "frame_id"


def with_id(atoms: Atoms) -> Atoms:
    """``atoms`` with ``info['frame_id']`` set (if missing); returns the same object."""
    atoms.info.setdefault(FRAME_ID, frame_id(atoms))
    return atoms


def read_json(path: str | Path, default=None):
    """The JSON in ``path``, or ``default`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return default
    return json.loads(path.read_text())


def read_frames(path: str | Path) -> list[Atoms]:
    """All frames of an extended XYZ file (empty list if the file does not exist)."""
    import ase.io

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    return list(ase.io.read(path, ":", format="extxyz"))


class CampaignState:
    """The campaign folder: paths, the journal, the labelled data and the log.

    Args:
        root: the campaign folder (created if missing).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.root / "journal.json"
        self.data_path = self.root / "data" / "labelled.extxyz"
        self.failures_path = self.root / "data" / "failures.json"
        self.log_path = self.root / "log.txt"
        self.report_dir = self.root / "report"
        #: the stage running now, in words ("iteration 1, stage train"), for interrupt messages
        self.running: str | None = None

    # -- journal -------------------------------------------------------------------------------

    def journal(self) -> dict:
        return read_json(self.journal_path, {"done": [], "finished": False})

    def done(self, iteration: int, stage: str) -> bool:
        """True when ``stage`` of ``iteration`` has finished (all its files written)."""
        return f"{iteration}/{stage}" in self.journal()["done"]

    def mark(self, iteration: int, stage: str) -> None:
        """Record that ``stage`` of ``iteration`` has finished."""
        journal = self.journal()
        name = f"{iteration}/{stage}"
        if name not in journal["done"]:
            journal["done"].append(name)
        journal["current"] = name
        write_json(self.journal_path, journal)
        self.log(f"iteration {iteration}: {stage} done")

    def finish(self, reason: str) -> None:
        """Record that the campaign has ended and why."""
        journal = self.journal()
        journal["finished"] = True
        journal["reason"] = reason
        write_json(self.journal_path, journal)
        self.log(f"campaign finished: {reason}")

    # -- folders -------------------------------------------------------------------------------

    def iteration_dir(self, iteration: int) -> Path:
        path = self.root / "iterations" / f"{iteration:03d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- data ----------------------------------------------------------------------------------

    def labelled(self) -> list[Atoms]:
        """Every labelled frame, in the order it was added."""
        return read_frames(self.data_path)

    def add_labelled(self, frames: Sequence[Atoms], iteration: int) -> int:
        """Append frames not yet in the data (by ``frame_id``); returns how many were added."""
        data = self.labelled()
        known = {a.info[FRAME_ID] for a in data}
        new = []
        for atoms in frames:
            with_id(atoms)
            if atoms.info[FRAME_ID] in known:
                continue
            atoms.info.setdefault("iteration", iteration)
            known.add(atoms.info[FRAME_ID])
            new.append(atoms)
        if new:
            write_frames(self.data_path, data + new)
        return len(new)

    def failures(self) -> list[dict]:
        return read_json(self.failures_path, [])

    def add_failures(self, failures: Sequence, iteration: int) -> None:
        """Record oracle failures (``frame_id``, ``reason``), each once."""
        records = self.failures()
        seen = {(r["frame_id"], r["iteration"]) for r in records}
        for failure in failures:
            if (failure.frame_id, iteration) in seen:
                continue
            records.append(
                {"frame_id": failure.frame_id, "iteration": iteration, "reason": failure.reason}
            )
            self.log(
                f"iteration {iteration}: oracle failed on {failure.frame_id}: {failure.reason}"
            )
        write_json(self.failures_path, records)

    # -- log -----------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """Append one time-stamped line to log.txt (flushed and synced)."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path, "a") as handle:
            handle.write(f"{stamp}  {message}\n")
            handle.flush()
            os.fsync(handle.fileno())
