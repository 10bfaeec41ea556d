"""Where in volume the NPT campaigns went: the range of V/N (A^3/atom) of the frames each
campaign's walkers kept and of the frames it picked for labels (the picks of iterations >= 1,
not the shared initial frames), per campaign and seed, read from the campaign folders.

With ``narrow_below`` (MIL-53: 16.7 A^3/atom, halfway between GFN1-xTB's narrow pore, 13.3,
and large pore, 20.1) a column gives the share of kept frames below it: did the walkers reach
the narrow side of the breathing at all?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uq_bias.campaign.explored import explored_frames
from uq_bias.campaign.state import CampaignState


def volumes(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(V/N of every kept walker frame, V/N of every picked label) of one campaign folder."""
    state = CampaignState(Path(folder))
    iterations = sorted(int(p.name) for p in (state.root / "iterations").glob("[0-9]*"))
    kept = [a for k in iterations for a in explored_frames(state, k)]
    picked = [a for a in state.labelled() if int(a.info.get("iteration", 0)) > 0]
    per_atom = lambda frames: np.array([a.get_volume() / len(a) for a in frames])  # noqa: E731
    return per_atom(kept), per_atom(picked)


def spread(v: np.ndarray) -> str:
    return "-" if v.size == 0 else f"{v.min():.1f} / {np.median(v):.1f} / {v.max():.1f}"


def range_lines(folders: dict, narrow_below: float | None = None) -> list[str]:
    """A markdown table of the module docstring for ``folders`` ((name, seed) -> folder)."""
    head = "| campaign | seed | kept V/N min / median / max | picked V/N min / median / max |"
    rule = "| --- | --- | --- | --- |"
    if narrow_below is not None:
        head += f" kept below {narrow_below:g} |"
        rule += " --- |"
    lines = [
        "Volume per atom (A^3/atom) of the frames each campaign kept and picked",
        "",
        head,
        rule,
    ]
    for (name, seed), folder in folders.items():
        kept, picked = volumes(folder)
        row = f"| {name} | {seed} | {spread(kept)} | {spread(picked)} |"
        if narrow_below is not None:
            share = float(np.mean(kept < narrow_below)) if kept.size else float("nan")
            row += f" {share:.1%} |"
        lines.append(row)
    return lines
