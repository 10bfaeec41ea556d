"""The verdict of a run: coverage at equal labels and PASS/MISS of the case's targets.

``results`` maps (variant name, seed) to the variant's rows, one per iteration
(:mod:`harness.rows`). Every figure is a mean over seeds:

* :func:`final`: of a row key in each seed's last row (the equal-labels comparison);
* :func:`nearest`: of a row key in each seed's row whose label count is nearest a given count
  (the earlier row on a tie), used when the variants ended at different label counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.case import Case
from harness.targets import Lowest, ratio

Results = dict[tuple[str, int], list[dict]]


def _mean(values: Sequence) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def final(results: Results, name: str, key: str) -> float:
    """Mean over seeds of ``key`` in the last row of variant ``name``; NaN without values."""
    return _mean([rows[-1][key] for (n, _), rows in results.items() if n == name and rows])


def nearest(results: Results, name: str, key: str, labels: float) -> float:
    """Mean over seeds of ``key`` in the row of ``name`` whose label count is nearest
    ``labels`` (the earlier row on a tie)."""
    picked = [
        min(rows, key=lambda r: (abs(r["n_labelled"] - labels), r["n_labelled"]))[key]
        for (n, _), rows in results.items()
        if n == name and rows
    ]
    return _mean(picked)


def finals(results: Results, names: Sequence[str], key: str) -> dict[str, float]:
    return {n: final(results, n, key) for n in names}


def _listed(values: dict[str, float]) -> str:
    return ", ".join(f"{n} {v:.3f}" for n, v in values.items())


def coverage_lines(results: Results, case: Case) -> list[str]:
    """Coverage of explored (intact), all explored and labelled frames of every variant, with
    the ratios of the first variant over the others for all explored frames."""
    names, short = case.names(), {v.name: v.short for v in case.variants}
    every = finals(results, names, "explored_all")
    first = names[0]
    ratios = ", ".join(
        f"{short[first]} / {short[n]} {ratio(every[first], every[n]):.2f}" for n in names[1:]
    )
    return [
        f"- coverage of explored frames (molecule in one piece): "
        f"{_listed(finals(results, names, 'explored'))}",
        f"- coverage of all explored frames (broken ones too): {_listed(every)}; {ratios}",
        f"- coverage of labelled frames: {_listed(finals(results, names, 'labelled'))}",
    ]


def common_labels(results: Results, case: Case, target: Lowest) -> str:
    """When the variants end at different label counts: ``target``'s values of each variant's
    model nearest the smallest final count (the label counts printed beside them)."""
    names = case.names()
    common = min(final(results, n, "n_labelled") for n in names)
    values = {n: nearest(results, n, target.key, common) for n in names}
    got = ", ".join(f"{n} {nearest(results, n, 'n_labelled', common):.0f}" for n in names)
    return f"- nearest {common:.0f} labels ({got}): {target.text(values)}"


def verdict(results: Results, case: Case) -> list[str]:
    """The verdict lines: whether the variants ended at equal labels, coverage, one PASS/MISS
    line per target and, at unequal labels, the :class:`Lowest` targets at the nearest common
    label count."""
    names, short = case.names(), {v.name: v.short for v in case.variants}
    labels = finals(results, names, "n_labelled")
    same = len(set(labels.values())) == 1
    head = (
        "At equal labels"
        if same
        else "NOT at equal labels (walkers that stopped early kept too few candidates)"
    )
    counts = ", ".join(f"{n}: {v:.0f}" for n, v in labels.items())
    lines = [f"{head} ({counts}), means over seeds:"]
    lines += coverage_lines(results, case)
    lines += [t.line(finals(results, names, t.key), short) for t in case.targets]
    if not same:
        lines += [common_labels(results, case, t) for t in case.targets if isinstance(t, Lowest)]
    return lines
