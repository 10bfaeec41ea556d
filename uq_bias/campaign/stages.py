"""The stages of one campaign iteration. Each reads the folder, writes its files atomically.

Every stage is ``stage(ctx, k)`` with a :class:`Context`; :mod:`uq_bias.campaign.loop` decides
which to run and marks them in the journal. Files of iteration k (``iterations/NNN/``)::

    labels/NNNN.extxyz | NNNN.failed.json   one per frame sent to the oracle (kept on a kill)
    labelled.extxyz                         the frames the oracle labelled in this iteration
    roles.json                              frame ids for training, validation, calibration
    model/member_J.model                    the trained model(s) (MACE model files)
    uncertainty/                            the fitted, calibrated uncertainty model
    calibration.json                        calibration factors and metrics
    metrics.json                            errors on validation, calibration and test
                                            frames; on the new batch before and after training
    predictions.json                        validation per-atom errors and uncertainties
    bias_seed.json                          estimated relative-bias window (first walkers)
    walkers/wNN.extxyz + wNN.json           each walker's candidates, why it stopped and its
                                            relative-bias window at the stop
    candidates.extxyz, selection.json, selected.extxyz
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_bias.campaign import config as cfg
from uq_bias.campaign import uq as unc
from uq_bias.campaign.oracles import Failure, Oracle
from uq_bias.campaign.roles import Roles, read_test, split_roles
from uq_bias.campaign.state import (
    FRAME_ID,
    CampaignState,
    read_frames,
    read_json,
    with_id,
    write_frames,
    write_json,
)
from uq_bias.campaign.systems import read_structures
from uq_bias.options import narrow

#: Info keys of a candidate that travel with it into the labelled data.
KEPT_INFO = (FRAME_ID, "walker", "step", "iteration")


@dataclass
class Context:
    """What every stage needs: the folder, the config, the (lazy) executor, the start
    structures, and where progress lines go."""

    state: CampaignState
    config: cfg.CampaignConfig
    executor: object  # loop.LazyExecutor: .get() -> Executor
    structures: list[Atoms]
    say: Callable[[str], None] = print
    bars: bool = False

    def dir(self, k: int) -> Path:
        return self.state.iteration_dir(k)


def start_structures(config: cfg.CampaignConfig) -> list[Atoms]:
    """The start structures named by ``data.structures``."""
    spec = config.data.structures
    return read_structures(spec, None if spec.startswith("builtin:") else config.path(spec))


def data_roles(ctx: Context) -> Roles:
    """The labelled frames by role (training, validation, calibration): see
    :mod:`uq_bias.campaign.roles`."""
    d = ctx.config.data
    return split_roles(
        ctx.state.labelled(), d.valid_fraction, d.calibration_fraction, ctx.config.seed
    )


def test_frames(ctx: Context) -> list[Atoms]:
    """The labelled test frames of ``data.test`` (empty without one)."""
    test = ctx.config.data.test
    return read_test(ctx.config.path(test)) if test else []


# -- labelling ---------------------------------------------------------------------------------


def _clean(atoms: Atoms) -> Atoms:
    """A bare copy (no calculator, no arrays beyond positions) keeping only KEPT_INFO."""
    frame = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update({k: atoms.info[k] for k in KEPT_INFO if k in atoms.info})
    return with_id(frame)


def map_resumable(
    ctx: Context,
    fn: Callable,
    items: Sequence,
    done: Callable[[int], bool],
    save: Callable[[int, object], None],
) -> None:
    """Run ``fn`` over the items not ``done`` yet, saving each result as soon as it comes."""
    todo = [i for i in range(len(items)) if not done(i)]
    if not todo:
        return
    executor = ctx.executor.get() if len(todo) > 1 else None
    if executor is None:
        for i in todo:
            save(i, fn(items[i]))
        return
    for j, result in executor.imap(fn, [items[i] for i in todo]):
        save(todo[j], result)


def label_frames(ctx: Context, k: int, frames: Sequence[Atoms]) -> None:
    """Label ``frames`` with the oracle, frame by frame into ``labels/``; then write
    ``labelled.extxyz`` and record the failures."""
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
    ctx.state.add_failures(failures, k)


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
    label_frames(ctx, k, frames)
    if data.initial_data:
        from uq_bias.training.labels import read_frames as read_labelled

        given = [with_id(a) for a in read_labelled(ctx.config.path(data.initial_data))]
        mine = read_frames(ctx.dir(k) / "labelled.extxyz")
        write_frames(ctx.dir(k) / "labelled.extxyz", given + mine)


def merge(ctx: Context, k: int) -> None:
    """Add this iteration's labelled frames to the data (each frame id once)."""
    frames = read_frames(ctx.dir(k) / "labelled.extxyz")
    added = ctx.state.add_labelled(frames, k)
    ctx.state.log(f"iteration {k}: {added} frames added, {len(ctx.state.labelled())} in total")


def label(ctx: Context, k: int) -> None:
    """Label the selected frames."""
    label_frames(ctx, k, read_frames(ctx.dir(k) / "selected.extxyz"))


# -- training and uncertainty ------------------------------------------------------------------


def model_paths(ctx: Context, k: int) -> list[Path]:
    folder = ctx.dir(k) / "model"
    return [folder / f"member_{j}.model" for j in range(ctx.config.model.ensemble)]


def train(ctx: Context, k: int) -> None:
    """Train (or fine-tune) the model or ensemble with Lightning on the training split."""
    from uq_bias.training import compute_statistics

    config = ctx.config
    roles = data_roles(ctx)
    train_frames, valid_frames = roles.train, roles.valid
    if not train_frames or not valid_frames or not roles.calibration:
        n = len(train_frames) + len(valid_frames) + len(roles.calibration)
        raise ValueError(
            f"iteration {k}: need a labelled frame for training, validation and calibration "
            f"each, have {n} frames in all; raise data.initial_frames"
        )
    write_json(
        ctx.dir(k) / "roles.json",
        {
            name: [a.info[FRAME_ID] for a in getattr(roles, name)]
            for name in ("train", "valid", "calibration")
        },
    )
    options = replace(config.training, seed=config.seed + 1000 * k)
    trainer = replace(config.trainer, progress_bar=ctx.bars)
    previous = model_paths(ctx, k - 1) if (config.model.fine_tune and k > 1) else None
    fresh = previous is None and config.model.file is None
    stats = compute_statistics(train_frames, config.model.cutoff) if fresh else None
    with _quiet_lightning():
        _train_members(ctx, k, train_frames, valid_frames, options, trainer, previous, stats)


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's info lines (GPU available, tips) off while training; restored after."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _train_members(ctx, k, train_frames, valid_frames, options, trainer, previous, stats):
    """Train each member (one for a single model) with seed ``options.seed + j``; members
    already written (before a kill) are kept."""
    from uq_bias.training import train as train_model

    config = ctx.config
    for j, out in enumerate(model_paths(ctx, k)):
        if out.is_file():  # a member finished before a kill (model files are written atomically)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        init = (
            previous[j]
            if previous
            else (config.path(config.model.file) if config.model.file else None)
        )
        train_model(
            train_frames,
            valid_frames,
            out,
            init=init,
            preset=config.model.preset,
            cutoff=config.model.cutoff,
            dtype=config.model.dtype,
            statistics=stats,
            options=replace(options, seed=options.seed + j),
            trainer_options=trainer,
            log=out.with_name(f"member_{j}_metrics.csv"),
        )


def uncertainty_dir(ctx: Context, k: int) -> Path:
    return ctx.dir(k) / "uncertainty"


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


def load_uncertainty(ctx: Context, k: int):
    return unc.load(uncertainty_dir(ctx, k), device=ctx.config.device)


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
        "valid": unc.error_metrics(predictions),
    }
    if roles.calibration is not roles.valid:
        result["calibration"] = unc.error_metrics(unc.predict(model, roles.calibration))
    test = test_frames(ctx)
    if test:
        result["test"] = unc.error_metrics(unc.predict(model, test))
    before = read_metrics(ctx.state, k - 1).get("batch") if k >= 2 else None
    batch = read_frames(ctx.dir(k - 1) / "labelled.extxyz") if before else []
    if batch:
        after = unc.error_metrics(unc.predict(model, batch))
        result["previous_batch"] = {"iteration": k - 1, "before": before, "after": after}
    write_json(ctx.dir(k) / "predictions.json", unc.atom_errors(predictions))
    write_json(ctx.dir(k) / "metrics.json", result)


def read_metrics(state: CampaignState, k: int) -> dict:
    return read_json(state.iteration_dir(k) / "metrics.json", {})


def evaluate(ctx: Context, k: int) -> None:
    """Errors of iteration k's model on the frames just labelled (which it has not seen)."""
    frames = read_frames(ctx.dir(k) / "labelled.extxyz")
    path = ctx.dir(k) / "metrics.json"
    metrics_k = read_json(path, {})
    if frames:
        predictions = unc.predict(load_uncertainty(ctx, k), frames)
        metrics_k["batch"] = unc.error_metrics(predictions)
    write_json(path, metrics_k)


# -- exploration and selection -----------------------------------------------------------------


def continued_frames(ctx: Context, k: int, i: int) -> list[Atoms]:
    """Walker i's kept frames of iteration k - 1 (no results) when it goes on from them in
    iteration k (``exploration.start: last``, k > 1, kept frames, and its walk did not end in a
    blow-up or in a spurious low of the model, ``energy_drop``), else []. Of a walker that
    started again within its walk, the frames since it last did."""
    from uq_bias.dynamics.watchdog import NO_CONTINUE

    if ctx.config.exploration.start != "last" or k <= 1:
        return []
    folder = ctx.state.iteration_dir(k - 1) / "walkers"
    path, summary = folder / f"w{i:02d}.extxyz", read_json(folder / f"w{i:02d}.json", {})
    if not path.is_file() or summary.get("stop_reason") in NO_CONTINUE:
        return []
    since = max((r["step"] for r in summary.get("restarts", [])), default=0)
    frames = [a for a in read_frames(path) if a.info.get("step", since + 1) > since]
    return [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]


def walker_starts(ctx: Context, k: int) -> list[Atoms]:
    """Where the walkers of iteration ``k`` start (``exploration.start``): the start structures,
    the latest labelled frames, or (``last``) where each walker's walk of iteration k - 1 ended
    (:func:`resume_frame`), so that walker i explores on from there under its retrained model;
    a walker that blew up, fell into a hole or kept nothing starts again from its start
    structure."""
    e = ctx.config.exploration
    if e.start == "labelled":
        frames = ctx.state.labelled()[-e.walkers :]
        return [Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc) for a in frames]
    if e.start == "structures" or k <= 1:
        return ctx.structures
    starts, model = [], None
    for i in range(e.walkers):
        frames = continued_frames(ctx, k, i)
        if not frames:
            starts.append(ctx.structures[i % len(ctx.structures)])
            continue
        model = model or load_uncertainty(ctx, k)  # once for all walkers
        starts.append(resume_frame(model, frames))
    return starts


def resume_frame(model, frames: list[Atoms]) -> Atoms:
    """Of a continued walker's last :data:`REBASE_FRAMES` kept frames, the one with the lowest
    energy under ``model``, iteration k's. Not simply the last: a walk that ended on an energy rise
    ended at the top of its climb, and the retrained model knows better than the old one how
    high that is (measured on alanine dipeptide: <|F|> of 4.4 eV/A under the new model over a
    biased walker's last 16 frames, against about 1 at 300 K; walkers going on from the last
    frame blew up within 9 and 21 steps)."""
    recent = frames[-REBASE_FRAMES:]
    energies = model(model.graph(recent)).energy.detach().cpu().numpy()
    return recent[int(np.argmin(energies))]


#: Kept frames at the end of a continued walker's last walk that seed its next window.
REBASE_FRAMES = 16


def bias_seed(ctx: Context, k: int) -> dict:
    """Window means <|F|>, <|w dU/dr|> (eV/A) of iteration k's model over the start frames of
    the walkers that start afresh (the start structures, or the latest labelled frames with
    ``start: labelled``), without MD; ``bias_seed.json``.

    Only those frames: the bias force's mean is tau_rel <|F|>, and <|F|> of labelled frames
    (rattled copies, max-det picks far from equilibrium) is many times that of thermal MD near
    the start (measured on alanine dipeptide: 5.0 eV/A over the rattled frames, against about 1
    at 300 K), which pushed walkers 2 eV up the surface in their first 10 steps. From the start
    frame the window's mean follows the walker's own forces as it fills."""
    from uq_bias.bias import estimate_window

    path = ctx.dir(k) / "bias_seed.json"
    seed = read_json(path)
    if seed is None:
        labelled = ctx.config.exploration.start == "labelled"
        frames = walker_starts(ctx, k) if labelled else ctx.structures
        model = load_uncertainty(ctx, k)
        force_mean, bias_mean = estimate_window(model, frames, ctx.config.exploration.bias)
        seed = {"force_mean": force_mean, "bias_mean": bias_mean, "n_frames": len(frames)}
        write_json(path, seed)
    return seed


def bias_states(ctx: Context, k: int, walkers: int) -> list[dict] | None:
    """The relative-bias window each walker starts from, so that the bias acts from its first
    step at the strength tau_rel asks for under iteration k's model. None without a relative
    bias.

    A continued walker (:func:`continued_frames`) starts from <|F|> and <|w dU/dr|> of model k
    over its last :data:`REBASE_FRAMES` kept frames, the region it goes on from; the others from
    :func:`bias_seed`. The window a walker ended with is not carried over: its samples belong to
    iteration k - 1's model, and a retrained, recalibrated model's gradient of U can be many
    times larger (measured on alanine dipeptide: 20x after one iteration, which broke bonds at
    step 2), and to where that walk ended, not where the next one starts (carried into walks
    that restart from the start structure, it drove them 2 eV up the surface within 20 steps)."""
    from uq_bias.bias import estimate_window

    bias = ctx.config.exploration.bias
    if bias.tau_rel is None:
        return None
    states, model = [], None
    for i in range(walkers):
        frames = continued_frames(ctx, k, i)[-REBASE_FRAMES:]
        if frames:
            if model is None:  # once for all walkers
                model = load_uncertainty(ctx, k)
            force_mean, bias_mean = estimate_window(model, frames, bias)
        else:
            seed = bias_seed(ctx, k)
            force_mean, bias_mean = seed["force_mean"], seed["bias_mean"]
        states.append({"forces": [force_mean], "bias": [bias_mean]})
    return states


def restart_where(ctx: Context, k: int, specs: list) -> list:
    """``specs`` with where each walker starts again after a blow-up (``exploration.restarts``):
    its start structure, with the window measured there, whatever it went on from (a continued
    walker's frame is far up the surface under the new model; starting there again is how it
    blew up)."""
    from uq_bias.bias import estimate_window

    e = ctx.config.exploration
    if not e.restarts:
        return specs
    state = None
    if e.bias.tau_rel is not None and e.start != "labelled":
        seed = bias_seed(ctx, k)  # measured over the start structures
        state = {"forces": [seed["force_mean"]], "bias": [seed["bias_mean"]]}
    elif e.bias.tau_rel is not None:  # bias_seed is over the labelled frames the walkers start from
        force_mean, bias_mean = estimate_window(load_uncertainty(ctx, k), ctx.structures, e.bias)
        state = {"forces": [force_mean], "bias": [bias_mean]}
    structures = ctx.structures
    return [
        replace(s, restart_start=structures[s.index % len(structures)], restart_bias_state=state)
        for s in specs
    ]


def explore(ctx: Context, k: int) -> None:
    """Biased MD from every walker; each walker's frames are saved as it finishes."""
    from uq_bias.dynamics import (
        CalculatorRecipe,
        ExploreConfig,
        run_batched,
        run_walker,
        walker_specs,
    )

    e = ctx.config.exploration
    seed = ctx.config.seed * 1000 + k
    bars = ctx.bars and ctx.config.executor.kind == "inprocess"
    explore_config = replace(narrow(e, ExploreConfig), seed=seed, progress=bars)
    device = e.device or ctx.config.device
    recipe = CalculatorRecipe(str(uncertainty_dir(ctx, k)), bias=e.bias, device=device)
    states = bias_states(ctx, k, e.walkers)
    specs = walker_specs(
        recipe, walker_starts(ctx, k), explore_config, walkers=e.walkers, bias_states=states
    )
    specs = restart_where(ctx, k, specs)
    folder = ctx.dir(k) / "walkers"
    folder.mkdir(exist_ok=True)

    def done(i: int) -> bool:
        return (folder / f"w{i:02d}.json").is_file()

    def save(i: int, result) -> None:
        write_frames(folder / f"w{i:02d}.extxyz", [with_id(a) for a in result.frames])
        write_json(
            folder / f"w{i:02d}.json",
            {
                "stop_reason": result.stop_reason,
                "stop_step": result.stop_step,
                "message": result.message,
                "max_uncertainty": float(result.max_uncertainty),
                "n_frames": len(result.frames),
                "restarts": result.restarts,
                "bias_state": result.bias_state,
            },
        )

    if e.engine == "batched":  # one batch in this process, on the device
        todo = [i for i in range(len(specs)) if not done(i)]
        if todo:
            results = run_batched(recipe.load_model(), recipe.bias, [specs[i] for i in todo])
            for i, result in zip(todo, results):
                save(i, result)
    else:
        map_resumable(ctx, run_walker, specs, done, save)
    candidates = []
    for i in range(len(specs)):
        candidates.extend(read_frames(folder / f"w{i:02d}.extxyz"))
        summary = read_json(folder / f"w{i:02d}.json")
        summary.pop("bias_state", None)
        ctx.state.log(f"iteration {k}: walker {i}: {summary}")
    write_frames(ctx.dir(k) / "candidates.extxyz", candidates)


def select(ctx: Context, k: int) -> None:
    """Pick a batch of candidates with the configured method (max-det by default), on posterior
    gradient features conditioned on every labelled frame, whatever its role (training,
    validation, calibration), so that no label is spent next to one already paid for; for an
    ensemble these are its members' features, so a batch is not capped at K - 1 max-det picks
    (:class:`uq_bias.uncertainty.conditioned.ConditionedFeatures`). The test set (``data.test``)
    is left out on purpose: a loop that steers its labels away from the test frames would no
    longer be judged by data it never used."""
    from uq_bias.selection import SelectionOptions
    from uq_bias.selection import select as select_batch

    config = ctx.config
    labelled = ctx.state.labelled()
    known = {a.info[FRAME_ID] for a in labelled}
    pool = [
        a for a in read_frames(ctx.dir(k) / "candidates.extxyz") if a.info[FRAME_ID] not in known
    ]
    n = config.selection.batch_size
    if config.stop.label_budget is not None:
        n = min(n, max(0, config.stop.label_budget - len(known)))
    indices, scores, n_filled = [], [], 0
    if pool and n > 0:
        options = replace(narrow(config.selection, SelectionOptions), seed=config.seed + k)
        model = load_uncertainty(ctx, k)
        chosen = select_batch(model, pool, n, labelled_frames=labelled, **asdict(options))
        n_filled = int(chosen.n_filled)  # frames that add nothing new: not labelled
        indices = [int(i) for i in chosen.indices[: len(chosen.indices) - n_filled]]
        scores = [float(s) for s in chosen.scores[: len(indices)]]
    selected = [pool[i] for i in indices]
    write_frames(ctx.dir(k) / "selected.extxyz", selected)
    write_json(
        ctx.dir(k) / "selection.json",
        {
            "method": config.selection.method,
            "n_candidates": len(pool),
            "n_asked": n,
            "indices": indices,
            "scores": scores,
            "n_filled": n_filled,
            "frame_ids": [a.info[FRAME_ID] for a in selected],
        },
    )


STAGES: dict[str, Callable[[Context, int], None]] = {
    "label_initial": label_initial,
    "train": train,
    "uncertainty": fit_uncertainty,
    "metrics": metrics,
    "explore": explore,
    "select": select,
    "label": label,
    "evaluate": evaluate,
    "merge": merge,
}
