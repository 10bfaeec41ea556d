"""What a run leaves behind: the table, the figure, ``table.md`` and ``results.json``.

The table has one line per (variant, seed, iteration): labels, explored and broken frames,
coverage of explored (intact), all explored and labelled frames, per test subset the energy
RMSE (meV/atom), force RMSE (eV/A) and, where scored, stress RMSE (meV/A^3), and the labels'
median height (meV/atom; :mod:`harness.rows`). ``table.md`` ends with the exact command line.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.case import Case
from harness.verdict import Results

HEAD = (
    "| campaign | seed | iteration | labels | explored frames | broken | coverage explored "
    "| all | coverage labelled |"
)
#: Per test subset: (row key suffix, header after the subset's name, scale, format).
SUBSET_COLUMNS = (
    ("energy_rmse", "E RMSE (meV/atom)", 1000.0, ".1f"),
    ("forces_rmse", "F RMSE (eV/A)", 1.0, ".3f"),
    ("stress_rmse", "S RMSE (meV/A^3)", 1000.0, ".2f"),
)


def fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _columns(results: Results, case: Case) -> list[tuple[str, str, float, str]]:
    """(row key, header, scale, format) of the subset columns present in the rows."""
    first = next((rows[0] for rows in results.values() if rows), {})
    return [
        (f"{s.name}_{key}", f"{s.name} {head}", scale, spec)
        for s in case.test_set.subsets
        for key, head, scale, spec in SUBSET_COLUMNS
        if f"{s.name}_{key}" in first
    ]


def table(results: Results, case: Case) -> list[str]:
    """The markdown table (the module docstring)."""
    columns = _columns(results, case)
    head = HEAD + "".join(f" {h} |" for _, h, _, _ in columns)
    head += " labels' median height (meV/atom) |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for (name, seed), rows in results.items():
        for r in rows:
            cells = [name, seed, r["iteration"], r["n_labelled"], r["n_explored"], r["n_broken"]]
            cells += [fmt(r["explored"]), fmt(r["explored_all"]), fmt(r["labelled"])]
            cells += [format(scale * r[key], spec) for key, _, scale, spec in columns]
            cells.append(f"{1000 * r['label_height']:.0f}")
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """``python <script> <args>`` as run (``argv``: the arguments; None: ``sys.argv``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", script, *(shlex.quote(a) for a in args)])


def plot(results: Results, case: Case, path: Path, caption: str) -> None:
    """Coverage of explored (solid) and labelled (dashed) frames, and the force RMSE on the
    first test subset, against labels; one colour per variant, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uq_bias.atomic import atomic_path

    subset = case.test_set.subsets[0].name
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for colour, name in zip(("C3", "C0", "C1", "C2", "C4", "C5"), case.names()):
        seeds = [rows for (n, _), rows in results.items() if n == name and rows]
        for j, rows in enumerate(seeds):
            x = [r["n_labelled"] for r in rows]
            label = name if j == 0 else None
            ex = [(r["n_labelled"], r["explored"]) for r in rows if r["explored"] is not None]
            if ex:
                ax1.plot(
                    *zip(*ex), "-o", color=colour, label=f"{label} explored" if label else None
                )
            ax1.plot(
                x,
                [r["labelled"] for r in rows],
                "--s",
                color=colour,
                alpha=0.7,
                label=f"{label} labelled" if label else None,
            )
            ax2.plot(x, [r[f"{subset}_forces_rmse"] for r in rows], "-o", color=colour, label=label)
    ax1.set_xlabel("labelled frames")
    names = ", ".join(cv.name for cv in case.cvs)
    many = f"{len(case.cvs)} CVs, mean over pairs"  # a dozen torsion names fill the axis
    ax1.set_ylabel(f"coverage of ({names if len(case.cvs) <= 3 else many}) space")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("labelled frames")
    ax2.set_ylabel(f"force RMSE on the {subset} test frames (eV/A)")
    ax2.legend(fontsize=7)
    fig.suptitle(caption, fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def write(out: Path, lines: Sequence[str], results: Results, meta: dict) -> Path:
    """``out/table.md`` (``lines``) and ``out/results.json`` (``meta`` and the rows under
    ``results``, keyed ``<variant>/<seed>``); returns the table's path."""
    from uq_bias.atomic import write_text

    write_text(out / "table.md", "\n".join(lines) + "\n")
    data = {**meta, "results": {f"{n}/{s}": rows for (n, s), rows in results.items()}}
    write_text(out / "results.json", json.dumps(data, indent=1))
    return out / "table.md"
