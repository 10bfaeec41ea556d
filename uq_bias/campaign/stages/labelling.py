"""Labelling stages: the initial frames (iteration 0), the selected frames, and merging them
into the campaign's data. Frames go to the oracle one by one into ``labels/`` (kept on a kill)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_bias.campaign.oracles import Failure, Oracle
from uq_bias.campaign.stages.context import Context, map_resumable
from uq_bias.campaign.state import (
    FRAME_ID,
    read_frames,
    read_json,
    with_id,
    write_frames,
    write_json,
)

#: Info keys of a candidate that travel with it into the labelled data.
KEPT_INFO = (FRAME_ID, "walker", "step", "iteration")


def _clean(atoms: Atoms) -> Atoms:
    """A bare copy (no calculator, no arrays beyond positions) keeping only KEPT_INFO."""
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update({k: atoms.info[k] for k in KEPT_INFO if k in atoms.info})
    return with_id(frame)


def label_frames(ctx: Context, k: int, frames: Sequence[Atoms]) -> list[Failure]:
    """Label ``frames`` with the oracle, frame by frame into ``labels/``; then write
    ``labelled.extxyz``. Returns the frames the oracle failed on (the caller records them)."""
    folder = ctx.dir(k) / "labels"
    folder.mkdir(exist_ok=True)
    frames = [_clean(a) for a in frames]

    def done(i: int) -> bool:
        return any(p.is_file() for p in _paths(folder, i))

    def save(i: int, result) -> None:
        good, bad = _paths(folder, i)
        if isinstance(result, Failure):
            write_json(bad, {"frame_id": result.frame_id, "reason": result.reason})
        else:
            write_frames(good, [result])

    map_resumable(ctx, Oracle(ctx.config.oracle).labeller(), list(enumerate(frames)), done, save)
    return _collect(ctx, k, range(len(frames)))


def _paths(folder: Path, i: int) -> tuple[Path, Path]:
    """The label file and the failure file of frame ``i`` in ``labels/`` (one of them exists
    once the oracle has answered)."""
    return folder / f"{i:04d}.extxyz", folder / f"{i:04d}.failed.json"


def _collect(ctx: Context, k: int, indices: Sequence[int]) -> list[Failure]:
    """Write ``labelled.extxyz`` from the answered frames ``indices`` in ``labels/``; return
    the failures."""
    labelled, failures = [], []
    for i in indices:
        good, bad = _paths(ctx.dir(k) / "labels", i)
        if good.is_file():
            labelled.extend(read_frames(good))
        else:
            failures.append(Failure(**read_json(bad)))
    write_frames(ctx.dir(k) / "labelled.extxyz", labelled)
    return failures


def labels_begun(ctx: Context, k: int) -> bool:
    """Whether iteration ``k``'s labelling has paid for a label (or a failure) already."""
    folder = ctx.state.root / "iterations" / f"{k:03d}" / "labels"  # ctx.dir(k) would make it
    return folder.is_dir() and any(folder.iterdir())


def label_paid(ctx: Context, k: int) -> None:
    """Iteration ``k``'s labelling, cut short: keep the frames the oracle has answered (labels
    and failures in ``labels/``), call it on no other."""
    folder = ctx.dir(k) / "labels"
    n = len(read_frames(ctx.dir(k) / "selected.extxyz"))
    answered = [i for i in range(n) if any(p.is_file() for p in _paths(folder, i))]
    ctx.state.add_failures(_collect(ctx, k, answered), k)


def perturbed(atoms: Atoms, rng: np.random.Generator, rattle: float, strain: float) -> Atoms:
    """A copy of ``atoms`` rattled by N(0, rattle^2) per coordinate (A) and, for a cell periodic
    in all three directions, strained by a random symmetric eps with independent entries
    eps_ab = eps_ba ~ U(-strain, strain):  cell' = cell (I + eps),  r' = r (I + eps), so the
    fractional coordinates are kept. Molecules and slabs are only rattled."""
    out = atoms.copy()
    out.positions = out.positions + rng.normal(scale=rattle, size=(len(out), 3))
    if strain > 0 and out.pbc.all():
        upper = np.triu(rng.uniform(-strain, strain, size=(3, 3)))
        deformation = np.eye(3) + upper + np.triu(upper, 1).T
        out.set_cell(out.cell.array @ deformation, scale_atoms=True)
    return out


def label_initial(ctx: Context, k: int) -> None:
    """Iteration 0: label ``initial_frames`` perturbed copies of the start structures (see
    :func:`perturbed`), and take the frames of ``initial_data`` as they are."""
    data = ctx.config.data
    rng = np.random.default_rng(ctx.config.seed)
    frames = [
        perturbed(ctx.structures[i % len(ctx.structures)], rng, data.rattle, data.strain)
        for i in range(data.initial_frames)
    ]
    failures = label_frames(ctx, k, frames)
    if frames and len(failures) == len(frames):
        _oracle_broken(ctx, k, failures)
    given = []
    if data.initial_data:
        from uq_bias.training.labels import read_frames as read_labelled

        given = [with_id(a) for a in read_labelled(ctx.config.path(data.initial_data))]
    labelled = given + read_frames(ctx.dir(k) / "labelled.extxyz")
    _check_enough(ctx, failures, labelled)
    ctx.state.add_failures(failures, k)
    write_frames(ctx.dir(k) / "labelled.extxyz", labelled)


def _check_enough(ctx: Context, failures: list[Failure], labelled: list[Atoms]) -> None:
    """The oracle failed on some initial frames and the rest leave too few for the first split:
    ConfigError asking for more ``data.initial_frames`` (which may grow until iteration 0 is
    done; the frames labelled so far are kept and only new ones go to the oracle)."""
    from uq_bias.campaign.roles import short_roles
    from uq_bias.options import ConfigError

    d, seed, ensemble = ctx.config.data, ctx.config.seed, ctx.config.model.ensemble
    short = short_roles(labelled, d.valid_fraction, d.calibration_fraction, seed, ensemble)
    if not (short and failures):
        return
    n = ctx.config.data.initial_frames
    first = failures[0]
    message = (
        f"config key 'data.initial_frames': the oracle failed on {len(failures)} of {n} initial "
        f"frames (first, {first.frame_id}: {first.reason}), and the {len(labelled)} labelled "
        f"frames leave too few for {' or '.join(short)}. Raise data.initial_frames (to "
        f"{n + 2 * len(failures)}, say) and run again: the frames labelled so far are kept, "
        "only the new ones go to the oracle"
    )
    ctx.state.log(message)
    raise ConfigError(message)


def _oracle_broken(ctx: Context, k: int, failures: list[Failure]) -> None:
    """The oracle failed on every initial frame: a setup error (calculator, command, licence),
    not the physics of a few frames. Forget the failures, so that a run with the oracle
    corrected labels these frames, and say so."""
    from uq_bias.options import ConfigError

    shutil.rmtree(ctx.dir(k) / "labels")
    (ctx.dir(k) / "labelled.extxyz").unlink(missing_ok=True)
    first = failures[0]
    ctx.state.log(
        f"iteration {k}: the oracle failed on all {len(failures)} initial frames (first: "
        f"{first.frame_id}: {first.reason}); failures forgotten, stopping"
    )
    raise ConfigError(
        f"config key 'oracle': the oracle failed on all {len(failures)} initial frames, nothing "
        f"was labelled; the first, {first.frame_id}: {first.reason}. Correct 'oracle' and run "
        "again: the campaign starts with these frames"
    )


def merge(ctx: Context, k: int) -> None:
    """Add this iteration's labelled frames to the data (each frame id once)."""
    frames = read_frames(ctx.dir(k) / "labelled.extxyz")
    added = ctx.state.add_labelled(frames, k)
    ctx.state.log(f"iteration {k}: {added} frames added, {len(ctx.state.labelled())} in total")


def label(ctx: Context, k: int) -> None:
    """Label the selected frames. If the oracle fails on all of them (at least
    :data:`ALL_FAILED_MIN`), the first time this is a :class:`~uq_bias.errors.StageError` that
    forgets the failures (a broken oracle: licence, executable, machine), so that a rerun labels
    them again; the second time in a row the failures are recorded and the campaign goes on
    (frames beyond the oracle)."""
    frames = read_frames(ctx.dir(k) / "selected.extxyz")
    failures = label_frames(ctx, k, frames)
    marker = ctx.dir(k) / ALL_FAILED
    if len(failures) == len(frames) >= ALL_FAILED_MIN:
        if not marker.is_file():
            _all_failed(ctx, k, failures)
        ctx.state.log(f"iteration {k}: the oracle failed on all selected frames again; recorded")
    marker.unlink(missing_ok=True)
    ctx.state.add_failures(failures, k)


#: Marks an iteration whose selected frames all failed once (the next time they are recorded).
ALL_FAILED = "labels_all_failed.json"
#: The smallest batch whose failing whole stops the campaign (one or two distorted frames may
#: simply be beyond the oracle).
ALL_FAILED_MIN = 3


def _all_failed(ctx: Context, k: int, failures: list[Failure]) -> None:
    from uq_bias.errors import StageError

    shutil.rmtree(ctx.dir(k) / "labels")
    (ctx.dir(k) / "labelled.extxyz").unlink(missing_ok=True)
    write_json(ctx.dir(k) / ALL_FAILED, [vars(f) for f in failures])
    first = failures[0]
    ctx.state.log(
        f"iteration {k}: the oracle failed on all {len(failures)} selected frames (first: "
        f"{first.frame_id}: {first.reason}); failures forgotten, stopping"
    )
    raise StageError(
        f"iteration {k}: the oracle failed on all {len(failures)} selected frames, nothing was "
        f"labelled (first, {first.frame_id}: {first.reason}). If something outside the config "
        "broke it (licence, executable, PATH, the machine), correct that and run again: these "
        "frames go to the oracle again, and if it fails on all of them again they are recorded "
        "as failures and the campaign goes on. The 'oracle' section cannot change in this "
        "folder; to change it, start a new campaign (a new 'folder') with data.initial_data: "
        f"{ctx.state.data_path}"
    )
