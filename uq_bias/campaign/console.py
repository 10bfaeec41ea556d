"""One console line per finished iteration, read from the campaign folder.

    iteration 2 | trained on 24 labels | valid F RMSE 0.121 eV/A | test F RMSE 0.140 eV/A |
    labelled 8 of 8 asked, 32 labels now | CV coverage explored 0.213, labelled 0.154 |
    walkers completed@2000 tau 0.31, uncertainty@812 tau 0.42 | train 41 s, ..., merge 0 s

(on one line). The numbering is the report's (:mod:`uq_bias.campaign.report`): iteration k's
model is trained on the labels of row k ("labelled" there), its errors are those of that model
(validation split; ``data.test`` when set), and the batch it then selects and labels is row k's
"selected" column (picked of asked: max-det stops before frames that add nothing). Coverage is
that of :mod:`uq_bias.campaign.explored` after the iteration (the frames the walkers kept so far
in which the molecule is in one piece, all labelled frames: the report's coverage row k + 1);
each walker gives its stop reason, the MD step it stopped at and its last bias strength tau;
stage times are those of the stages run by this call (``timings.json``).
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


def picked_of_asked(selection: dict) -> str:
    """``4 of 8 asked`` from ``selection.json`` (older folders: the number picked alone)."""
    picked = len(selection.get("indices", []))
    asked = selection.get("n_asked")
    return f"{picked}" if asked is None else f"{picked} of {asked} asked"


def selection_text(selection: dict, n_now: int, failed: int = 0) -> str:
    """``labelled 4 of 8 asked (the rest add nothing new), 28 labels now``; with oracle
    failures ``labelled 3 of 4 selected (8 asked), the oracle failed on 1, ...``."""
    if failed:
        picked = len(selection.get("indices", []))
        asked = selection.get("n_asked", picked)
        text = f"labelled {picked - failed} of {picked} selected ({asked} asked)"
    else:
        text = f"labelled {picked_of_asked(selection)}"
    if selection.get("n_filled"):
        text += " (the rest add nothing new)"
    if failed:
        text += f", the oracle failed on {failed}"
    return f"{text}, {n_now} labels now"


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
    n_now = len(state.labelled())
    parts = [f"iteration {k}", f"trained on {metrics.get('n_labelled', n_now)} labels"]
    for split in ("valid", "test"):
        if split in metrics:
            parts.append(f"{split} F RMSE {metrics[split]['forces_rmse']:.3g} eV/A")
    selection = read_json(folder / "selection.json")
    if selection is not None:
        failed = sum(1 for r in state.failures() if r.get("iteration") == k)
        parts.append(selection_text(selection, n_now, failed))
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
