"""Run a case's campaigns: every variant for every seed, ``jobs`` processes at a time.

Campaign folders are ``<out>/seed<s>/<variant.folder>`` and resumable (a rerun continues where a
run stopped, and reuses a finished one). Each campaign prints one line per finished iteration:
the campaign's own console line (:mod:`uq_bias.campaign.console`: labels, validation error, CV
coverage, walkers, stage times) with the new model's force RMSE on the test subsets appended
(:mod:`harness.scoring`), prefixed by ``[<variant> seed <s>]``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.case import Case, Subset
from harness.quiet import quiet
from harness.scoring import progress_text, score_iterations


@dataclass(frozen=True)
class Job:
    """One campaign, as a worker process receives it (picklable)."""

    name: str
    seed: int
    config: dict
    base_dir: str
    test_path: str
    subsets: tuple[Subset, ...]


def jobs_of(
    case: Case, seeds: Sequence[int], out: Path, test_path: Path, only: Sequence[str] | None = None
) -> list[Job]:
    """Seed by seed, the variants in the case's order (``only``: these variant names)."""
    return [
        Job(
            v.name,
            s,
            case.config(v, s),
            str(out / f"seed{s}"),
            str(test_path),
            case.test_set.subsets,
        )
        for s in seeds
        for v in case.variants
        if only is None or v.name in only
    ]


def run_job(job: Job) -> str:
    """Run (or resume) one campaign with one torch thread; returns its folder."""
    import torch

    from uq_bias.campaign import config as cfg
    from uq_bias.campaign.loop import run
    from uq_bias.campaign.state import read_frames

    torch.set_num_threads(1)
    config = cfg.from_dict(job.config, base_dir=job.base_dir)
    folder = config.path(config.folder)
    frames = read_frames(job.test_path)
    tag = f"[{job.name} seed {job.seed}]"

    def progress(line: str) -> None:
        scores, new = score_iterations(folder, frames, Path(job.test_path), job.subsets)
        suffix = f" | {progress_text(scores[max(new)])}" if new else ""
        print(f"{tag} {line}{suffix}", flush=True)

    start = time.perf_counter()
    result = run(config, progress=progress)
    print(f"{tag} done in {time.perf_counter() - start:.0f} s", flush=True)
    return str(result.folder)


def run_all(jobs: Sequence[Job], processes: int) -> dict[tuple[str, int], Path]:
    """Run ``jobs`` (``processes`` at a time; 1: in this process); {(variant, seed): folder}."""
    if processes > 1:
        with ProcessPoolExecutor(max_workers=processes, initializer=quiet) as pool:
            done = list(pool.map(run_job, jobs))
    else:
        done = [run_job(job) for job in jobs]
    return {(j.name, j.seed): Path(f) for j, f in zip(jobs, done)}
