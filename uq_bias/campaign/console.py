"""One console line per finished iteration, read from the campaign folder.

    iteration 2 | 32 labels | valid F RMSE 0.121 eV/A | test F RMSE 0.140 eV/A |
    CV coverage explored 0.213, labelled 0.154 | walkers completed@2000 tau 0.31,
    uncertainty@812 tau 0.42 | train 41 s, uncertainty 2 s, ..., merge 0 s

(on one line). Labels are those in the data after the iteration; the errors are those of
iteration k's model (validation split; ``data.test`` when set); coverage is that of
:mod:`uq_bias.campaign.explored` after the iteration (the frames the walkers kept so far in
which the molecule is in one piece, all labelled frames); each walker gives its stop reason,
the MD step it stopped at and its last bias strength tau; stage times are those of the stages
run by this call (``timings.json``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ase import Atoms

from uq_bias.campaign.cvs import CollectiveVariable
from uq_bias.campaign.explored import coverage_by_iteration
from uq_bias.campaign.state import CampaignState, read_frames, read_json

TIMINGS = "timings.json"


def walker_summaries(state: CampaignState, k: int) -> list[dict]:
    """Per walker of iteration k: stop reason, stop step, final tau (None when unbiased or
    unknown: the walker's JSON ``tau`` if recorded, else the ``bias_strength`` of its last kept
    frame) and the reasons of the stops it started again after."""
    folder = state.root / "iterations" / f"{k:03d}" / "walkers"
    out = []
    for path in sorted(folder.glob("w*.json")) if folder.is_dir() else []:
        info = read_json(path, {})
        tau = info.get("tau")
        if tau is None:
            frames = read_frames(path.with_suffix(".extxyz"))
            tau = frames[-1].info.get("bias_strength") if frames else None
        restarts = [r["reason"] for r in info.get("restarts", [])]
        summary = {"reason": info.get("stop_reason"), "step": info.get("stop_step"), "tau": tau}
        out.append(summary | {"restarts": restarts})
    return out


def _walker_text(walkers: list[dict]) -> str:
    parts = []
    for w in walkers:
        tau = "" if w["tau"] is None else f" tau {float(w['tau']):.3g}"
        after = "".join(f"{reason}, then " for reason in w.get("restarts", []))
        parts.append(f"{after}{w['reason']}@{w['step']}{tau}")
    return "walkers " + ", ".join(parts)


def iteration_line(
    state: CampaignState,
    k: int,
    cvs: Sequence[CollectiveVariable],
    reference: Atoms | None = None,
) -> str:
    """The console line of iteration ``k`` (see the module docstring); ``reference``: the
    structure whose bonds an intact explored frame keeps."""
    folder = state.iteration_dir(k)
    metrics = read_json(folder / "metrics.json", {})
    parts = [f"iteration {k}", f"{len(state.labelled())} labels"]
    for split in ("valid", "test"):
        if split in metrics:
            parts.append(f"{split} F RMSE {metrics[split]['forces_rmse']:.3g} eV/A")
    rows = coverage_by_iteration(state, cvs, [k + 1], reference)
    if rows:
        explored = "-" if rows[0].explored is None else f"{rows[0].explored:.3f}"
        parts.append(f"CV coverage explored {explored}, labelled {rows[0].labelled:.3f}")
    walkers = walker_summaries(state, k)
    if walkers:
        parts.append(_walker_text(walkers))
    timings = read_json(folder / TIMINGS, {})
    if timings:
        parts.append(", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
    return " | ".join(parts)
