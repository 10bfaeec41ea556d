"""What a campaign's labels bought: their energy band, the local torsion environments they hold,
and the test error of a model retrained on a part of them.

Run on one seed's folder of ``exploration.py`` (the campaign folders side by side) with the test
set those campaigns were scored on. Per campaign:

* **height** of a labelled frame: h_i = E_i / N - min_t E_t / N, eV/atom, t over the test
  frames (the benchmark's "labels' median height"); the 10th, 50th and 90th percentile;
* **local pairs**: a model with a finite cutoff sees a few torsions of a chain at a time, so
  next to the benchmark's coverage (the mean over *all* torsion pairs) stands the coverage of
  the *adjacent* pairs, pooled. Two backbone torsions (i, j, k, l) are adjacent when their
  central bonds j-k share an atom; a frame gives one point (phi_a, phi_b) per adjacent pair, and
  the points of every pair and frame form one cloud in the periodic square (-180, 180]^2.
  *local coverage* is :func:`uq_bias.campaign.coverage.coverage` of that cloud;
* **near**: the share of the test subset's local points with a labelled local point within
  ``tol`` degrees, distance max(|d phi_a|, |d phi_b|) with each d taken around the circle;
* with ``--retrain``: a model trained afresh on the campaign's final training and validation
  split (``iterations/<last>/roles.json``) restricted to the labels with h <= ``--max-height``
  (meV/atom) and, with ``--subsample T V``, a random T training and V validation frames of it,
  with the campaign's own model and training options (training seed ``--train-seed``); its
  force RMSE on the test subset (eV/A). A label set whose low part alone gives the full set's
  error spends its high labels on nothing the test frames need.

    python benchmarks/label_diagnostics.py SEED_FOLDER --test FILE [--subset conf]
        [--retrain --max-height 60 --subsample 25 8 --train-seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from harness.case import Subset
from harness.rows import label_heights

TORSION_BOX = {"low": [-180.0, -180.0], "high": [180.0, 180.0], "periodic": [True, True]}


def adjacent_pairs(quads) -> list[tuple[int, int]]:
    """(a, b), a < b, of the torsions ``quads`` (i, j, k, l) whose central bonds share an atom."""
    return [
        (a, b)
        for a in range(len(quads))
        for b in range(a + 1, len(quads))
        if {quads[a][1], quads[a][2]} & {quads[b][1], quads[b][2]}
    ]


def local_points(torsions: np.ndarray, pairs) -> np.ndarray:
    """(S * P, 2) the points (phi_a, phi_b) of the P ``pairs`` in each of S frames, from the
    (S, T) torsions (degrees), pair by pair."""
    torsions = np.asarray(torsions, dtype=np.float64)
    if not pairs:
        return np.zeros((0, 2))
    return np.concatenate([torsions[:, [a, b]] for a, b in pairs])


def near_share(points: np.ndarray, reference: np.ndarray, tol: float) -> float:
    """The share of ``points`` (n, 2) with a ``reference`` point (m, 2) within ``tol`` degrees
    (module docstring's periodic max-norm); 0 when there is no reference point."""
    if not len(reference):
        return 0.0
    d = np.abs(points[:, None, :] - reference[None, :, :]) % 360.0
    d = np.minimum(d, 360.0 - d).max(axis=-1)
    return float((d.min(axis=1) <= tol).mean())


@dataclass
class LabelSummary:
    """One campaign's labels (module docstring): heights in meV/atom, shares in [0, 1]."""

    campaign: str
    labels: int
    height_percentiles: tuple[float, float, float]
    local_coverage: float
    near: float

    def line(self, tol: float) -> str:
        p10, p50, p90 = self.height_percentiles
        return (
            f"{self.campaign}: {self.labels} labels, height p10/p50/p90 {p10:.0f}/{p50:.0f}/"
            f"{p90:.0f} meV/atom, local coverage {self.local_coverage:.3f}, test local points "
            f"within {tol:g} deg of a label's {self.near:.2f}"
        )


def summarise(folder: Path, test_points: np.ndarray, quads, pairs, test, tol: float):
    """The :class:`LabelSummary` of the campaign in ``folder``."""
    from ase.io import read

    from uq_bias.campaign.coverage import coverage
    from uq_bias.torsions import dihedrals

    labelled = read(folder / "data" / "labelled.extxyz", ":")
    points = local_points(np.array([dihedrals(a, quads) for a in labelled]), pairs)
    p10, p50, p90 = np.percentile(1000.0 * label_heights(labelled, test), [10, 50, 90])
    return LabelSummary(
        folder.name,
        len(labelled),
        (float(p10), float(p50), float(p90)),
        coverage(points, **TORSION_BOX),
        near_share(test_points, points, tol),
    )


def final_split(folder: Path) -> tuple[list, list]:
    """(train, valid) labelled frames of the campaign's last trained iteration."""
    from ase.io import read

    from uq_bias.campaign.state import FRAME_ID

    roles_file = sorted((folder / "iterations").glob("*/roles.json"))[-1]
    roles = json.loads(roles_file.read_text())
    by_id = {a.info[FRAME_ID]: a for a in read(folder / "data" / "labelled.extxyz", ":")}
    return [by_id[i] for i in roles["train"]], [by_id[i] for i in roles["valid"]]


def retrain(folder: Path, test_frames, test, args) -> tuple[int, int, float]:
    """(training frames, validation frames, test force RMSE eV/A) of the module docstring's
    retrained model."""
    from uq_bias.calculator import Calculator
    from uq_bias.campaign import config as cfg
    from uq_bias.training import train

    config = cfg.load(folder / "config.yaml")
    keep = args.max_height / 1000.0
    train_frames, valid_frames = (
        [a for a, h in zip(part, label_heights(part, test)) if h <= keep]
        for part in final_split(folder)
    )
    if args.subsample:
        have = (len(train_frames), len(valid_frames))
        if any(n < 1 or n > m for n, m in zip(args.subsample, have)):
            raise InputError(
                f"--subsample {args.subsample[0]} {args.subsample[1]}: {folder.name} has "
                f"{have[0]} training and {have[1]} validation frames at heights <= "
                f"{args.max_height:g} meV/atom; ask for 1 to that many of each"
            )
        rng = np.random.default_rng(args.train_seed)
        train_frames, valid_frames = (
            [part[j] for j in sorted(rng.choice(len(part), n, replace=False))]
            for part, n in zip((train_frames, valid_frames), args.subsample)
        )
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "model.model"
        train(
            train_frames,
            valid_frames,
            out,
            preset=config.model.preset,
            cutoff=config.model.cutoff,
            dtype=config.model.dtype,
            options=replace(config.training, seed=args.train_seed),
            trainer_options=replace(config.trainer, progress_bar=False),
            log=None,
        )
        calc = Calculator(out)
    squared = []
    for atoms in test_frames:
        probe = atoms.copy()
        probe.calc = calc
        squared.append(((probe.get_forces() - atoms.get_forces()) ** 2).mean())
    return len(train_frames), len(valid_frames), float(np.sqrt(np.mean(squared)))


class InputError(ValueError):
    """An input the diagnostics cannot use; the message names it and what is expected."""


def campaign_folders(seed_folder: Path, names) -> list[Path]:
    """The campaign folders to read: ``names`` in ``seed_folder`` (default: every folder there
    with labels), each checked to hold ``data/labelled.extxyz``."""
    if not seed_folder.is_dir():
        raise InputError(
            f"{str(seed_folder)!r}: no such folder; give one seed's folder of "
            "exploration.py (OUT/<molecule>_<hash>/seedN)"
        )
    labelled = Path("data") / "labelled.extxyz"
    if names is None:
        names = sorted(p.name for p in seed_folder.iterdir() if (p / labelled).is_file())
    missing = [n for n in names if not (seed_folder / n / labelled).is_file()]
    if missing:
        raise InputError(
            f"--campaigns {' '.join(missing)}: no such campaign in {str(seed_folder)!r} (each "
            f"needs {labelled})"
        )
    if not names:
        raise InputError(
            f"{str(seed_folder)!r}: no campaign folder with {labelled} in it; give one seed's "
            "folder of exploration.py"
        )
    return [seed_folder / n for n in names]


def main(argv=None) -> int:
    from harness.quiet import quiet

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("seed_folder", type=Path, help="one seed's folder of exploration.py")
    p.add_argument("--test", type=Path, required=True, help="the cached test set (extxyz)")
    p.add_argument("--subset", default="conf", help="test frames whose info subset starts so")
    p.add_argument("--start", type=Path, help="start structure (default: ../start.xyz)")
    p.add_argument("--tol", type=float, default=30.0, help="near: tolerance, degrees")
    p.add_argument("--retrain", action="store_true", help="also retrain on each campaign's labels")
    p.add_argument("--campaigns", nargs="+", help="campaign folder names (default: all)")
    p.add_argument("--max-height", type=float, default=float("inf"), help="meV/atom")
    p.add_argument("--subsample", type=int, nargs=2, metavar=("TRAIN", "VALID"))
    p.add_argument("--train-seed", type=int, default=1)
    args = p.parse_args(argv)
    quiet()
    try:
        folders = campaign_folders(args.seed_folder, args.campaigns)
        return run(args, folders)
    except InputError as err:
        p.error(str(err))


def run(args, folders: list[Path]) -> int:
    from ase.io import read

    from uq_bias.torsions import backbone_torsions, dihedrals

    if not args.test.is_file():
        raise InputError(f"--test {str(args.test)!r}: no such file; give the cached test set")
    test = read(args.test, ":")
    subset = Subset(args.subset, args.subset).of(test)
    if not subset:
        raise InputError(f"--subset {args.subset!r}: no frame of {str(args.test)!r} is in it")
    start = args.start or args.seed_folder.parent / "start.xyz"
    if not start.is_file():
        raise InputError(f"--start {str(start)!r}: no such file; give the campaigns' start")
    quads = backbone_torsions(read(start))
    pairs = adjacent_pairs(quads)
    test_points = local_points(np.array([dihedrals(a, quads) for a in subset]), pairs)
    print(
        f"{len(quads)} backbone torsions, {len(pairs)} adjacent pairs; {len(subset)} test "
        f"frames '{args.subset}'"
    )
    for folder in folders:
        print(summarise(folder, test_points, quads, pairs, test, args.tol).line(args.tol))
        if args.retrain:
            n_train, n_valid, rmse = retrain(folder, subset, test, args)
            print(
                f"  retrained (heights <= {args.max_height:g} meV/atom, seed {args.train_seed}): "
                f"{n_train} train + {n_valid} valid, {args.subset} F RMSE {rmse:.4f} eV/A",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
