"""The exploration stage: where each walker starts (and starts again), the relative-bias window it
starts with, and the (biased) MD of every walker."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from ase import Atoms

from uq_bias.campaign.stages.context import (
    Context,
    load_uncertainty,
    map_resumable,
    uncertainty_dir,
)
from uq_bias.campaign.state import read_frames, read_json, with_id, write_frames, write_json
from uq_bias.options import narrow


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
    ``start: labelled``), without MD; with ``bias.tau_rel_stress`` > 0 also the stress window's
    <||sigma||_F>, <||w_S (1/V) dU/deps||_F> (eV/A^3) over the periodic ones; ``bias_seed.json``.

    Only those frames: the bias force's mean is tau_rel <|F|>, and <|F|> of labelled frames
    (rattled copies, max-det picks far from equilibrium) is many times that of thermal MD near
    the start (measured on alanine dipeptide: 5.0 eV/A over the rattled frames, against about 1
    at 300 K), which pushed walkers 2 eV up the surface in their first 10 steps. From the start
    frame the window's mean follows the walker's own forces as it fills."""
    from uq_bias.bias import estimate_state

    path = ctx.dir(k) / "bias_seed.json"
    seed = read_json(path)
    if seed is None:
        labelled = ctx.config.exploration.start == "labelled"
        frames = walker_starts(ctx, k) if labelled else ctx.structures
        model = load_uncertainty(ctx, k)
        state = estimate_state(model, frames, ctx.config.exploration.bias)
        seed = {"force_mean": state["forces"][0], "bias_mean": state["bias"][0]}
        if "stress" in state:
            seed |= {"stress_mean": state["stress"][0], "bias_stress_mean": state["bias_stress"][0]}
        seed["n_frames"] = len(frames)
        write_json(path, seed)
    return seed


def _seed_state(seed: dict) -> dict:
    """The one-sample window state (:meth:`uq_bias.bias.RelativeStrength.from_state`) of a
    :func:`bias_seed` dict."""
    state = {"forces": [seed["force_mean"]], "bias": [seed["bias_mean"]]}
    if "stress_mean" in seed:
        state |= {"stress": [seed["stress_mean"]], "bias_stress": [seed["bias_stress_mean"]]}
    return state


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
    from uq_bias.bias import estimate_state

    bias = ctx.config.exploration.bias
    if bias.tau_rel is None:
        return None
    states, model = [], None
    for i in range(walkers):
        frames = continued_frames(ctx, k, i)[-REBASE_FRAMES:]
        if frames:
            if model is None:  # once for all walkers
                model = load_uncertainty(ctx, k)
            states.append(estimate_state(model, frames, bias))
        else:
            states.append(_seed_state(bias_seed(ctx, k)))
    return states


def restart_where(ctx: Context, k: int, specs: list) -> list:
    """``specs`` with where each walker starts again after a blow-up (``exploration.restarts``):
    its start structure, with the window measured there, whatever it went on from (a continued
    walker's frame is far up the surface under the new model; starting there again is how it
    blew up)."""
    from uq_bias.bias import estimate_state

    e = ctx.config.exploration
    if not e.restarts:
        return specs
    state = None
    if e.bias.tau_rel is not None and e.start != "labelled":
        state = _seed_state(bias_seed(ctx, k))  # measured over the start structures
    elif e.bias.tau_rel is not None:  # bias_seed is over the labelled frames the walkers start from
        state = estimate_state(load_uncertainty(ctx, k), ctx.structures, e.bias)
    structures = ctx.structures
    return [
        replace(s, restart_start=structures[s.index % len(structures)], restart_bias_state=state)
        for s in specs
    ]


def on_ladder(e, specs: list) -> list:
    """``specs`` with walker i at the temperature and pressure of ``exploration.ladder`` point
    i mod len (unchanged without a ladder)."""
    if e.ladder is None:
        return specs
    out = []
    for s in specs:
        temperature, pressure = e.walker_conditions(s.index)
        out.append(replace(s, config=replace(s.config, temperature=temperature, pressure=pressure)))
    return out


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
    specs = on_ladder(e, restart_where(ctx, k, specs))
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
    candidates, summaries = [], []
    for i in range(len(specs)):
        candidates.extend(read_frames(folder / f"w{i:02d}.extxyz"))
        summaries.append(read_json(folder / f"w{i:02d}.json"))
        summaries[-1].pop("bias_state", None)
        ctx.state.log(f"iteration {k}: walker {i}: {summaries[-1]}")
    if all(s["stop_reason"] == "error" for s in summaries) and not candidates:
        _walkers_broken(ctx, k, summaries)
    write_frames(ctx.dir(k) / "candidates.extxyz", candidates)


def _walkers_broken(ctx: Context, k: int, summaries: list[dict]) -> None:
    """Every walker of iteration ``k`` stopped on an error from its calculator (out of device
    memory, a model that cannot take the structure) before it kept a frame: a setup error that
    a rerun would meet again, not physics to learn from. Forget the walks, so that a run with
    the cause corrected explores afresh, and stop instead of retraining on the same data.
    (Walkers that kept frames before the error go on to selection: the batched engine stops
    every walker of its batch on one late error.)"""
    import shutil

    from uq_bias.errors import StageError

    shutil.rmtree(ctx.dir(k) / "walkers")
    first = summaries[0]
    where = f"walker 0 at step {first['stop_step']}: {first['message']}"
    ctx.state.log(f"iteration {k}: every walker stopped on an error ({where}); walks forgotten")
    raise StageError(
        f"iteration {k}: all {len(summaries)} walkers stopped on an error from their calculator "
        f"before keeping a frame (first, {where}); nothing of this exploration was kept. "
        "Correct the cause ('device', 'exploration.walkers', 'exploration.engine' or the model) "
        f"and run again: the campaign resumes at iteration {k}'s exploration"
    )
