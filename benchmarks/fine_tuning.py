"""Does fine-tuning learn from every batch? A reduced alanine-dipeptide campaign (GFN2-xTB).

    python benchmarks/fine_tuning.py FOLDER [--iterations 6] [--epochs 60] [--preset tiny]
        [--set training.lr=0.01 ...] [--table-only]

Runs (or resumes) a campaign on ``builtin:alanine_dipeptide`` labelled by GFN2-xTB (tblite):
16 rattled initial frames, 2 walkers x 300 steps of relative-bias MD, 8 max-det picks per
iteration, fine-tuning from the previous model. ``--set section.key=value`` (YAML values)
changes any campaign key, e.g. ``--set training.keep_initial=true`` for the old behaviour.

Then, for every batch B_k labelled in iteration k (``iterations/k/labelled.extxyz``, frames
picked by model k from its own walkers, never seen by it), prints the force RMSE and energy
RMSE per atom on B_k of model k (before) and of model k+1 (after: trained on the data with
B_k merged), and the largest parameter change between the two models. Computed from the
saved models in the folder, so it also reads a folder written by an older version.

Measured (2 shared CPU cores, tiny MACE, 60 epochs, lr 0.01; force RMSE on B_k, eV/A, before
-> after; "=" marks an unchanged model). Columns: the old behaviour (keep_initial, fine-tuning
at lr); a lower rate alone (fine_tune_lr 1e-3, keep_initial); a lower rate with the best trained
epoch; the new default (best trained epoch, fine-tuning at lr). All four ran on the code of
commit 83c1df8 plus the fine-tuning options only (one held-out split, valid_fraction 0.25,
no bias seeding), so that only fine-tuning differs:

    k   old              1e-3 alone       1e-3 + trained   new default
    1   3.08 -> 3.08 =   3.08 -> 3.08 =   3.08 -> 3.00     3.08 -> 0.69
    2   3.72 -> 1.15     3.72 -> 1.53     2.95 -> 1.29     1.82 -> 0.85
    3   7.04 -> 7.04 =   3.62 -> 3.62 =   3.95 -> 3.72     0.46 -> 0.42
    4   0.51 -> 0.51 =   2.74 -> 1.53     3.88 -> 1.88     0.75 -> 0.45
    5   3.74 -> 1.21     2.17 -> 1.45     3.24 -> 1.83     0.40 -> 0.35
    6   1.07 -> 0.74     0.94 -> 0.81     1.25 -> 0.96     0.32 -> 0.24
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from harness.quiet import quiet

BASE = {
    "seed": 0,
    "data": {"structures": "builtin:alanine_dipeptide", "initial_frames": 16, "rattle": 0.08},
    "oracle": {"kind": "gfn2-xtb"},
    "model": {"preset": "tiny", "cutoff": 5.0},
    "training": {"max_epochs": 60, "batch_size": 4},
    "uncertainty": {"method": "posterior"},
    "calibration": {"method": "conformal", "alpha": 0.1},
    "exploration": {
        "walkers": 2,
        "steps": 300,
        "timestep": 0.5,
        "temperature": 300.0,
        "sample_every": 10,
        # the bias and watchdog it was measured with, before the defaults of issue 23
        "bias": {"tau_rel": 0.5, "window": 50, "project": "none", "fade_kt": None},
        "watchdog": {
            "max_energy_rise_kt": None,
            "max_energy_drop_kt": None,
            "min_distance_ratio": None,
            "max_bond_stretch": None,
        },
    },
    "selection": {"method": "maxdet", "batch_size": 8},
    "stop": {"iterations": 6},
    "executor": {"kind": "inprocess"},
    "report": {"plots": False},
}


def _set(config: dict, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    *sections, name = key.split(".")
    target = config
    for section in sections:
        target = target.setdefault(section, {})
    target[name] = yaml.safe_load(value)


def _parameters(path: Path) -> torch.Tensor:
    module = torch.load(path, weights_only=False, map_location="cpu")
    return torch.cat([p.detach().double().flatten() for p in module.parameters()])


def table(folder: Path) -> list[dict]:
    """One row per batch B_k with a model after it: errors of model k and k+1 on B_k."""
    from uq_bias.campaign import uq as unc
    from uq_bias.campaign.state import read_frames

    rows = []
    iterations = folder / "iterations"
    k = 1
    while (iterations / f"{k + 1:03d}" / "uncertainty").is_dir():
        batch = read_frames(iterations / f"{k:03d}" / "labelled.extxyz")
        row = {"k": k, "n": len(batch)}
        for when, j in (("before", k), ("after", k + 1)):
            metrics = unc.error_metrics(
                unc.predict(unc.load(iterations / f"{j:03d}" / "uncertainty"), batch)
            )
            row[f"{when}_f"] = metrics["forces_rmse"]
            row[f"{when}_e"] = metrics["energy_rmse_per_atom"]
        models = [iterations / f"{j:03d}" / "model" / "member_0.model" for j in (k, k + 1)]
        row["dparam"] = float((_parameters(models[1]) - _parameters(models[0])).abs().max())
        rows.append(row)
        k += 1
    return rows


def main() -> None:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], dest="assignments")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    folder = args.folder.resolve()
    if not args.table_only:
        from uq_bias.campaign import run

        config = {name: dict(value) for name, value in BASE.items() if isinstance(value, dict)}
        config["seed"] = BASE["seed"]
        config["stop"]["iterations"] = args.iterations
        config["training"]["max_epochs"] = args.epochs
        config["model"]["preset"] = args.preset
        for assignment in args.assignments:
            _set(config, assignment)
        config["folder"] = str(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        start = time.perf_counter()
        run(path)
        print(f"campaign: {time.perf_counter() - start:.0f} s, config {path}")
    print("batch B_k = iterations/k/labelled.extxyz; before = model k, after = model k+1")
    print(f"{'k':>3} {'n':>3} {'F before':>9} {'F after':>9} {'E before':>9} {'E after':>9} dparam")
    for r in table(folder):
        print(
            f"{r['k']:>3} {r['n']:>3} {r['before_f']:9.4f} {r['after_f']:9.4f} "
            f"{1e3 * r['before_e']:9.2f} {1e3 * r['after_e']:9.2f} {r['dparam']:.2e}"
        )
    print("F: force RMSE eV/A; E: energy RMSE meV/atom; dparam: max |change| of a parameter")


if __name__ == "__main__":
    main()
