"""Data roles of a campaign: training, validation, calibration, and an optional test set.

Every labelled frame has exactly one role, decided by its ``frame_id`` alone:

    u(frame) = int(sha1(f"{seed}:{frame_id}")[:8], 16) / 2^32        uniform in [0, 1)
    validation   if u < v                       (early stopping, best-epoch weights)
    calibration  if v <= u < v + c              (conformal / likelihood factor)
    training     otherwise

with v = ``data.valid_fraction`` and c = ``data.calibration_fraction``. A frame never changes
role as the data grow, so frames that calibrated one iteration are never trained on in the next,
and frames that chose the best epoch never calibrate. Calibration frames take no part in model
selection, so the conformal guarantee P(r <= U) >= 1 - alpha holds for data exchangeable with
them. Two disjoint id-stable sets were chosen over cross-conformal (jackknife+) calibration,
which would need K retrained models per iteration (K times the training cost) for a tighter
factor; here calibration is free and keeps the roles auditable by frame id.

The test set (``data.test``) is a labelled extended-XYZ file that the loop never trains on,
calibrates on, stops early on or selects from; when it is given, the metrics stage reports on
it (``metrics.json["test"]``) and the target-RMSE stop rule uses it. Frames chosen by the loop
are not exchangeable with new data (they were picked for high uncertainty), so only the test
set gives figures that can be trusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_bias.campaign.state import FRAME_ID, with_id

TRAIN, VALID, CALIBRATION = 0, 1, 2


@dataclass
class Roles:
    """The labelled frames by role (each frame in exactly one list; calibration may be the
    validation list itself when ``calibration_fraction`` is 0)."""

    train: list[Atoms]
    valid: list[Atoms]
    calibration: list[Atoms]


def score(frame: Atoms, seed: int) -> float:
    """u(frame) in [0, 1) from the seed and the frame id (see the module docstring)."""
    digest = hashlib.sha1(f"{seed}:{frame.info[FRAME_ID]}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


def assign(scores: np.ndarray, valid: float, calibration: float) -> np.ndarray:
    """(n,) role of each score (TRAIN, VALID, CALIBRATION) by the thresholds of the module
    docstring. Where a role with a positive fraction came out empty, it takes the frame of the
    largest role whose score lies nearest its interval, as long as every role keeps one."""
    held_out = np.where(scores < valid + calibration, CALIBRATION, TRAIN)
    roles = np.where(scores < valid, VALID, held_out)
    wanted = [TRAIN, VALID] + ([CALIBRATION] if calibration > 0 else [])
    centre = {VALID: 0.5 * valid, CALIBRATION: valid + 0.5 * calibration, TRAIN: 1.0}
    for role in wanted:
        counts = {r: int((roles == r).sum()) for r in wanted}
        donor = max(wanted, key=lambda r: counts[r])
        if counts[role] or counts[donor] < 2:
            continue
        members = np.flatnonzero(roles == donor)
        roles[members[np.argmin(np.abs(scores[members] - centre[role]))]] = role
    return roles


def split_roles(
    frames: Sequence[Atoms], valid_fraction: float, calibration_fraction: float, seed: int
) -> Roles:
    """The :class:`Roles` of labelled ``frames`` (with ``frame_id``). With
    ``calibration_fraction`` 0 the validation frames calibrate too (optimistic coverage)."""
    scores = np.array([score(a, seed) for a in frames])
    roles = assign(scores, valid_fraction, calibration_fraction)
    pick = [[a for a, r in zip(frames, roles) if r == role] for role in (TRAIN, VALID, CALIBRATION)]
    train, valid, calibration = pick
    return Roles(train, valid, calibration if calibration_fraction > 0 else valid)


def short_roles(
    frames: Sequence[Atoms],
    valid_fraction: float,
    calibration_fraction: float,
    seed: int,
    ensemble: int,
) -> list[str]:
    """The roles :func:`split_roles` leaves short for ``frames``, in words (none: the first
    model can train, validate and calibrate). A deep ensemble (``ensemble`` > 1 members) trains
    on one frame; gradient features need two (their posterior scale and distances)."""
    roles = split_roles(frames, valid_fraction, calibration_fraction, seed)
    least = 1 if ensemble > 1 else 2
    short = {
        f"training ({least} needed, {len(roles.train)} given)": len(roles.train) < least,
        "validation": not roles.valid,
        "calibration": not roles.calibration,
    }
    return [name for name, missing in short.items() if missing]


def read_test(path: str | Path) -> list[Atoms]:
    """The labelled frames of a test file (energy and forces required), each with a frame id."""
    from uq_bias.training.labels import read_frames

    return [with_id(a) for a in read_frames(path)]
