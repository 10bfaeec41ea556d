"""What an NPT campaign did with the cell: each walker's volume per atom against MD time (the
plot of the uncertainty-biased MD paper, Zaverkin et al. 2024, Fig. 4) and its range per
iteration, for ``report/report.md``.

Walker i of iteration k ran ``exploration.steps`` MD steps of ``exploration.timestep`` fs; its
kept frames (``iterations/NNN/walkers/wII.extxyz``, ``info["step"]``) are placed on one time axis

    t = ((k - 1) * steps + step) * timestep / 1000        ps

so that iteration k's walk follows iteration k - 1's (with ``exploration.start: last`` walker i
is one trajectory; otherwise each iteration starts again from its start structure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uq_bias.campaign.figures import pyplot, save
from uq_bias.campaign.state import CampaignState, read_frames


def volume_traces(state: CampaignState, steps: int, timestep: float) -> dict[int, list]:
    """{walker: [(t ps, V/N A^3/atom, iteration k), ...]} over every iteration's kept frames of
    periodic walkers (the module docstring)."""
    traces: dict[int, list] = {}
    root = state.root / "iterations"
    for folder in sorted(root.glob("[0-9][0-9][0-9]/walkers")):
        k = int(folder.parent.name)
        for path in sorted(folder.glob("w[0-9][0-9].extxyz")):
            walker = int(path.stem[1:])
            for atoms in read_frames(path):
                if not atoms.pbc.all():
                    continue
                t = ((k - 1) * steps + int(atoms.info.get("step", 0))) * timestep / 1000.0
                traces.setdefault(walker, []).append((t, atoms.get_volume() / len(atoms), k))
    return traces


def plot_volume_traces(traces: dict[int, list], path: Path) -> None:
    """V/N against t, one line per walker."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for walker, points in sorted(traces.items()):
        t, v, _ = zip(*points)
        ax.plot(t, v, ".-", ms=3, lw=0.8, label=f"walker {walker}")
    ax.set_xlabel("MD time (ps, iterations one after another)")
    ax.set_ylabel("volume per atom (A^3)")
    ax.legend(fontsize=7)
    save(fig, path)


def cell_section(state: CampaignState, config, out: Path) -> list[str]:
    """The report's section on the cell (empty unless the walkers ran NPT on periodic cells)."""
    e = config.exploration
    traces = volume_traces(state, e.steps, e.timestep) if e.ensemble == "npt" else {}
    if not traces:
        return []
    lines = [
        "## Cell",
        "",
        "Volume per atom (A^3/atom) of the walkers' kept frames per iteration:",
        "",
        "| iteration | frames | min | mean | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    points = [p for trace in traces.values() for p in trace]
    for k in sorted({p[2] for p in points}):
        v = np.array([p[1] for p in points if p[2] == k])
        lines.append(f"| {k} | {len(v)} | {v.min():.2f} | {v.mean():.2f} | {v.max():.2f} |")
    lines.append("")
    if config.report.plots:
        plot_volume_traces(traces, out / "volume.png")
        lines += ["![volume per atom of each walker against MD time](volume.png)", ""]
    return lines
