"""A benchmark run of one case, from test set to verdict.

:func:`benchmark` loads (or makes, once) the case's test set, runs every variant for every seed
(:mod:`harness.campaigns`), scores every iteration's model, prints the table and the PASS/MISS
verdict and draws the figure; the caller may add sections (a stability test) to the lines and
then calls :func:`finish`, which adds the command line and wall time under the table and writes
``table.md`` and ``results.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import campaigns, report, rows, testsets
from harness.case import Case
from harness.verdict import Results, verdict


@dataclass(frozen=True)
class RunOptions:
    """How one run goes.

    Attributes:
        seeds: campaign seeds; every variant runs for each.
        out: folder of this run's campaigns, table, figure and results.
        command: the command line, printed under the table and the figure.
        describe: the run's sizes in words, beside the command line.
        jobs: campaigns run at once, processes.
        cache: folder of cached test sets.
        only: run only these variants (no table: it waits for a run with all).
    """

    seeds: tuple[int, ...]
    out: Path
    command: str
    describe: str
    jobs: int = 1
    cache: Path = testsets.DEFAULT_CACHE
    only: tuple[str, ...] | None = None


@dataclass
class Outcome:
    """A finished run: the campaign folders and rows, and the lines of ``table.md`` so far."""

    folders: dict[tuple[str, int], Path]
    results: Results
    lines: list[str]
    started: float = field(default_factory=time.perf_counter)


def benchmark(case: Case, options: RunOptions) -> Outcome | None:
    """Run ``case`` (the module docstring); None with ``options.only``."""
    started = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    frames, path = testsets.load(case.test_set, options.cache)
    counts = {s.name: len(s.of(frames)) for s in case.test_set.subsets}
    print(f"test set {path}: {' + '.join(f'{n} {name}' for name, n in counts.items())} frames")
    jobs = campaigns.jobs_of(case, options.seeds, options.out, path, options.only)
    folders = campaigns.run_all(jobs, options.jobs)
    if options.only:
        return None
    results = {key: rows.rows_of(folder, case, frames, path) for key, folder in folders.items()}
    lines = report.table(results, case) + [""] + verdict(results, case)
    print("\n".join(lines), flush=True)
    first = case.test_set.subsets[0].name
    caption = f"{options.command}\n{options.describe}; test: {counts[first]} {case.test_set.about}"
    report.plot(results, case, options.out / f"{case.name}.png", caption)
    return Outcome(folders, results, lines, started)


def finish(case: Case, options: RunOptions, outcome: Outcome, meta: dict) -> None:
    """Add the command line and wall time under the lines, write them and the results."""
    minutes = (time.perf_counter() - outcome.started) / 60
    lines = [
        *outcome.lines,
        "",
        f"command: `{options.command}`; {options.describe}; {minutes:.1f} min wall time",
    ]
    table = report.write(options.out, lines, outcome.results, meta)
    print(f"wrote {table}, {options.out / f'{case.name}.png'} ({minutes:.1f} min)")
