"""The benchmark harness the exploration benchmarks share.

A *case* (:class:`Case`) declares campaigns that differ only in how they explore
(:class:`Variant`), a held-out :class:`TestSet` cached by the content hash of its spec, the CVs
of coverage and PASS/MISS targets as data (:class:`Ratio`, :class:`Lowest`). :func:`benchmark`
runs every variant for every seed (``jobs`` processes, resumable folders), prints one line per
finished campaign iteration with the new model's test force RMSE, scores every iteration's
model, prints the table and the verdict and draws the figure; :func:`finish` writes
``table.md`` (command line under it) and ``results.json``. :func:`quiet` keeps third-party
warnings off every benchmark's console. ``benchmarks/exploration.py`` is the alanine-dipeptide
case; another system is a new small script that declares its case.

A new system is a case file of a few declarations (sketch; see ``exploration.py``)::

    case = Case(
        "npt",                                   # figure: npt.png
        base={...},                              # the campaign config the variants share
        variants=(Variant("biased-300K", "biased", "biased", {"bias": {"tau_rel": 0.1}}),
                  Variant("plain-300K", "plain", "plain", {"bias": {"tau": 0.0}})),
        test_set=TestSet("mil53_test", Spec(), make, (Subset("md", "md"),)),
        targets=(Ratio("explored", "biased-300K", "plain-300K", 2.0, "explored coverage"),
                 Lowest("md_forces_rmse", "biased-300K", "force RMSE on the MD frames", "eV/A")),
        cvs=(...),                               # CollectiveVariable s of coverage
    )
    options = RunOptions(seeds=(0,), out=out, command=command_line(...), describe="...")
    outcome = benchmark(case, options)           # None with options.only
    finish(case, options, outcome, {"size": ...})

Periodic test frames with a reference stress get a stress RMSE column of their own.

Why here and not in ``uq_bias``: the harness is a measuring instrument of the project, not
a step of fitting a potential. It judges the package's exploration against targets the project
sets, leans on scripts that make reference data (xTB test sets, MD stability) and on matplotlib
figures, and changes whenever a benchmark asks a new question; in the package it would become
public API that users build on and that must stay stable. A user who wants to compare
exploration settings on their own system copies no code: they write a case file beside these,
as the benchmarks of the next systems do. Scripts import it as ``harness`` (``benchmarks/``
is on ``sys.path`` when a script in it runs).
"""

from harness.bench import Outcome, RunOptions, benchmark, finish
from harness.case import Case, Subset, TestSet, Variant
from harness.quiet import quiet
from harness.targets import Lowest, Ratio

__all__ = [
    "Case",
    "Lowest",
    "Outcome",
    "Ratio",
    "RunOptions",
    "Subset",
    "TestSet",
    "Variant",
    "benchmark",
    "finish",
    "quiet",
]
