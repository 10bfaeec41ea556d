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

    def paths(i: int) -> tuple[Path, Path]:
        return folder / f"{i:04d}.extxyz", folder / f"{i:04d}.failed.json"

    def done(i: int) -> bool:
        return any(p.is_file() for p in paths(i))

    def save(i: int, result) -> None:
        good, bad = paths(i)
        if isinstance(result, Failure):
            write_json(bad, {"frame_id": result.frame_id, "reason": result.reason})
        else:
            write_frames(good, [result])

    map_resumable(ctx, Oracle(ctx.config.oracle).labeller(), list(enumerate(frames)), done, save)
    labelled, failures = [], []
    for i in range(len(frames)):
        good, bad = paths(i)
        if good.is_file():
            labelled.extend(read_frames(good))
        else:
            failures.append(Failure(**read_json(bad)))
    write_frames(ctx.dir(k) / "labelled.extxyz", labelled)
    return failures


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
    ctx.state.add_failures(failures, k)
    if data.initial_data:
        from uq_bias.training.labels import read_frames as read_labelled

        given = [with_id(a) for a in read_labelled(ctx.config.path(data.initial_data))]
        mine = read_frames(ctx.dir(k) / "labelled.extxyz")
        write_frames(ctx.dir(k) / "labelled.extxyz", given + mine)


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
    """Label the selected frames."""
    ctx.state.add_failures(label_frames(ctx, k, read_frames(ctx.dir(k) / "selected.extxyz")), k)
