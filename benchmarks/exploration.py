"""Does uncertainty-biased MD buy a better potential per label? Alanine dipeptide, GFN2-xTB.

    python benchmarks/exploration.py [--quick] [--seeds 0 1 2] [--hot 1200] [--no-stability]
                                     [--out DIR] [--cache ~/.cache/uq_bias] [--jobs 3]
                                     [--structure FILE | --smiles SMILES]

The alanine-dipeptide case of the benchmark harness (``benchmarks/harness``): this file
declares the campaigns, the test set and the targets; the harness runs, scores and reports.
Three active-learning campaigns (``uq_bias.campaign.run``) that differ only in how they explore:

* ``biased-300K``: uncertainty-biased MD at 300 K (relative strength tau_rel, window);
* ``plain-300K``: plain Langevin MD at 300 K;
* ``plain-<hot>K``: plain Langevin MD at ``--hot`` K (default 1200).

Same seeds, start structure, initial frames, model, training, selection (max-det) and label
budget. Each iteration's model is scored on a held-out test set that no campaign sees (made once
by ``alanine_test_set.py`` and cached in ``--cache``): frames over the whole Ramachandran plane
(``rama``) and from GFN2-xTB MD at 300, 600 and 1200 K (``md``). Coverage of CV space (phi,
psi) is that of :mod:`uq_bias.campaign.explored`: row k is model k, trained on the frames
labelled before iteration k, picked from the frames the walkers kept before iteration k.
*Explored* coverage counts the kept frames in which the molecule is in one piece (every bond of
the start structure under 1.5 x the covalent radii sum); *all* counts the broken ones too (a
hot walker that has lost a hydrogen fills the plane with dihedrals of no conformation).

Prints one line per finished campaign iteration (ending with the new model's test force RMSE),
then a table per iteration and the pass/miss of the target at equal labels (the last row):
biased covers >= 2x the Ramachandran area of plain 300 K and >= 0.9x the hot one, and has the
lowest force RMSE on the ``rama`` frames. Writes ``exploration.png`` (coverage and test force
RMSE against labels), ``table.md`` and ``results.json`` to ``--out``. With stability on (the
default), each final model also runs plain MD at 300 K and 600 K (``--stability-runs`` runs of
``--stability-ps`` ps) and the share of runs that do not blow up is reported (HAL Fig. 8; see
``md_stability.py``). Campaign folders are resumable: rerunning continues where a run stopped.

Any molecule (``--structure FILE``, anything ASE reads, or ``--smiles``; read and checked by
``molecule_input.py`` before anything is written, then relaxed by GFN2-xTB): the same three
campaigns with the package's default bias and watchdog (plain MD is ``bias: {tau: 0}`` alone;
the alanine campaigns spell out the settings they were measured with, so the package's defaults
do not change their table), the molecule's backbone torsions as CVs (coverage: the mean over
torsion pairs of the 2-CV coverage, :mod:`uq_bias.campaign.coverage`), its own cached held-out
test set (``molecule_test_set.py``: xTB MD at 300, 600 and 1200 K, ``md``, and frames spread
over torsion space from RDKit conformers, ``conf``), and the same targets with the force RMSE on
the ``conf`` frames. Its folder is ``--out``/<formula or file stem>_<size>.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parent))

import alanine_test_set  # noqa: E402
from harness import (  # noqa: E402
    Case,
    Lowest,
    Ratio,
    RunOptions,
    Subset,
    TestSet,
    Variant,
    benchmark,
    finish,
    quiet,
)
from harness.report import command_line  # noqa: E402

TARGET_VS_PLAIN, TARGET_VS_HOT = 2.0, 0.9
#: Size fields that only the biased campaign uses (the plain campaigns are shared across them).
BIAS_ONLY = (
    "tau_rel",
    "window",
    "h_weight",
    "energy_rise",
    "energy_drop",
    "max_uncertainty",
    "distance_ratio",
    "project",
    "fade",
)


@dataclass(frozen=True)
class Size:
    """Campaign size shared by the three campaigns."""

    preset: str
    cutoff: float
    initial: int
    batch: int
    iterations: int
    walkers: int
    steps: int
    sample_every: int
    max_epochs: int
    tau_rel: float
    window: int
    start: str = "structures"
    h_weight: float = 1.0
    fine_tune: bool = False
    #: Biased walkers stop when the model's energy rises this much above their lowest (eV/atom)
    #: or two atoms come closer than ``distance_ratio`` times their covalent radii sum; 0: off.
    energy_rise: float = 0.1
    #: Biased walkers stop when the model's energy falls this much below their first frame
    #: (eV/atom): the bias has steered them into a spurious low of the model; 0: off.
    energy_drop: float = 0.0
    #: Biased walkers stop (HAL, Zaverkin et al.) when a calibrated atom force uncertainty
    #: exceeds this (eV/A); the frame is kept and the walker goes on from its lowest recent
    #: frame in the next iteration; 0: off.
    max_uncertainty: float = 0.0
    distance_ratio: float = 0.6
    #: The bias acts along dihedrals only ("torsions") or along the full gradient ("none"), and
    #: fades out between fade[0] and fade[1] eV/atom above the walker's lowest energy.
    project: str = "none"
    fade: tuple[float, float] | None = None
    #: Every walker (biased or not) stops, as a blow-up, when a bond of its first frame is
    #: longer than this times the covalent radii sum, and starts again from the start
    #: structure; 0: off (a hot walker then goes on with a molecule in pieces).
    bond_stretch: float = 1.5
    #: Every walker that blows up (or, biased, climbs too high) starts again from the start
    #: structure for its steps left, up to this many times, so that each campaign gets its
    #: candidates (without, walkers stopped at step 9 kept nothing and campaigns ended short of
    #: the label budget).
    restarts: int = 5

    @property
    def budget(self) -> int:
        return self.initial + self.batch * self.iterations


#: Sized for 2 CPU cores (72 min with --jobs 3 on a busy machine): a small MACE, 16 initial +
#: 5 x 16 = 96 labels, 2 walkers x 2000 steps (1 ps) per iteration, each walker going on from
#: where it stopped (start "last"); every iteration trains from scratch (fine_tune False), so
#: the comparison does not hang on how well fine-tuning restarts. The bias acts along the
#: dihedrals (tau_rel 0.1) and fades out 0.04 to 0.07 eV/atom above the walker's lowest energy;
#: a biased walker whose model energy falls 0.05 eV/atom below its first frame (into a spurious
#: low of the model, where the bias drove it) stops and starts again.
DEFAULT = Size(
    "small",
    5.0,
    16,
    16,
    5,
    2,
    2000,
    10,
    60,
    0.1,
    100,
    start="last",
    project="torsions",
    fade=(0.04, 0.07),
    energy_drop=0.05,
)
QUICK = Size("tiny", 4.0, 8, 8, 2, 2, 300, 10, 30, 1.0, 20)


def base_config(size: Size) -> dict:
    """The campaign config the three campaigns share (all but their own exploration keys)."""
    return {
        "data": {
            "structures": "builtin:alanine_dipeptide",
            "initial_frames": size.initial,
            "rattle": 0.08,
        },
        "oracle": {"kind": "gfn2-xtb"},
        "model": {"preset": size.preset, "cutoff": size.cutoff, "fine_tune": size.fine_tune},
        "training": {"max_epochs": size.max_epochs, "batch_size": 4, "lr": 0.01},
        "uncertainty": {"method": "posterior"},
        "calibration": {"method": "conformal", "alpha": 0.1},
        "exploration": {
            "walkers": size.walkers,
            "steps": size.steps,
            "timestep": 0.5,
            "sample_every": size.sample_every,
            "start": size.start,
            "restarts": size.restarts,
        },
        "selection": {"method": "maxdet", "batch_size": size.batch},
        "stop": {"iterations": size.iterations, "label_budget": size.budget},
        "executor": {"kind": "inprocess"},
        "report": {"plots": True},
    }


def exploration(temperature: float, biased: bool, size: Size) -> dict:
    """The exploration keys of one campaign: temperature, bias and watchdog. Every key the
    alanine benchmark measured with is spelt out (eV/atom energy stops and fade, the checks it
    had off set to null), so that the package's defaults (issue 23: k_B T units, ``project:
    auto``, the watchdog of the recipe) do not change its campaigns or its table."""
    bias = {"tau_rel": size.tau_rel, "window": size.window} if biased else {"tau": 0.0}
    bias["project"] = size.project if biased else "none"
    bias["fade"] = None if size.fade is None or not biased else list(size.fade)
    bias["fade_kt"] = None
    if biased and size.h_weight != 1.0:
        bias["weights"] = {"H": size.h_weight}
    watchdog = {
        "max_bond_stretch": size.bond_stretch or None,
        "max_energy_rise": size.energy_rise if biased and size.energy_rise else None,
        "max_energy_drop": size.energy_drop if biased and size.energy_drop else None,
        "max_energy_rise_kt": None,
        "max_energy_drop_kt": None,
        "min_distance_ratio": size.distance_ratio if biased and size.distance_ratio else None,
    }
    if biased and size.max_uncertainty:
        watchdog["max_uncertainty"] = size.max_uncertainty
    return {"temperature": temperature, "bias": bias, "watchdog": watchdog}


def default_exploration(temperature: float, biased: bool) -> dict:
    """The exploration keys of a campaign on any other molecule: the package's defaults
    (issue 23), plain MD by ``tau: 0`` alone."""
    return {"temperature": temperature, "bias": {} if biased else {"tau": 0.0}, "watchdog": {}}


def folder_name(name: str, biased: bool, size: Size) -> str:
    """The campaign folder: the settings that differ between runs of the benchmark are in
    its name, so a run with other settings never resumes (and reuses) another's folder."""
    parts = [name] + ([f"taurel{size.tau_rel:g}", f"w{size.window}"] if biased else [])
    parts += [f"H{size.h_weight:g}"] if biased and size.h_weight != 1.0 else []
    parts += [f"rise{size.energy_rise:g}", f"ratio{size.distance_ratio:g}"] if biased else []
    parts += [f"drop{size.energy_drop:g}"] if biased and size.energy_drop else []
    parts += [f"umax{size.max_uncertainty:g}"] if biased and size.max_uncertainty else []
    parts += [size.project] if biased and size.project != "none" else []
    parts += [f"fade{size.fade[0]:g}-{size.fade[1]:g}"] if biased and size.fade else []
    return "_".join(parts + ([f"start-{size.start}"] if size.start != "structures" else []))


def variants(size: Size, hot: float, defaults: bool = False) -> tuple[Variant, ...]:
    """biased-300K, plain-300K and plain-<hot>K (the module docstring); ``defaults``: with the
    package's default bias and watchdog in place of the settings spelt out in ``size``."""
    kinds = [
        ("biased-300K", "biased", 300.0, True),
        ("plain-300K", "plain 300 K", 300.0, False),
        (f"plain-{hot:g}K", f"plain-{hot:g}K", hot, False),
    ]
    if defaults:
        from uq_bias.campaign.config import SelectionConfig

        band = SelectionConfig().thermal_band  # biased folders name the default they ran with
        tail = f"_band{band:g}" if band is not None else ""
        return tuple(
            Variant(
                name,
                short,
                f"{name}_defaults" + (tail if biased else ""),
                default_exploration(t, biased),
            )
            for name, short, t, biased in kinds
        )
    return tuple(
        Variant(name, short, folder_name(name, biased, size), exploration(t, biased, size))
        for name, short, t, biased in kinds
    )


def case(
    size: Size, hot: float, spec: alanine_test_set.TestSetSpec, defaults: bool = False
) -> Case:
    """The alanine-dipeptide case: three campaigns (``defaults``: with the package's default
    bias and watchdog), the held-out xTB test set, the targets."""
    from uq_bias.campaign.cvs import backbone_cvs
    from uq_bias.campaign.systems import builtin

    found = variants(size, hot, defaults)
    biased, plain, hot_name = (v.name for v in found)
    start = builtin("alanine_dipeptide")[0]
    test_set = TestSet(
        alanine_test_set.NAME,
        spec,
        alanine_test_set.make,
        (Subset("rama", "rama"), Subset("md", "md")),
        about="held-out GFN2-xTB frames over (phi, psi)",
    )
    targets = (
        Ratio("explored", biased, plain, TARGET_VS_PLAIN, "explored coverage"),
        Ratio("explored", biased, hot_name, TARGET_VS_HOT, "explored coverage"),
        Lowest("rama_forces_rmse", biased, "force RMSE on the Ramachandran test frames", "eV/A"),
    )
    base = base_config(size)
    if not defaults:  # the settings it measured with: every candidate is eligible
        base["selection"]["thermal_band"] = None
    return Case(
        "exploration",
        base,
        found,
        test_set,
        targets,
        tuple(backbone_cvs(start)),
        start,
    )


def molecule_case(size: Size, hot: float, start: Atoms, start_file: Path, quick: bool) -> Case:
    """Any molecule: the three campaigns with the package's defaults from ``start_file`` (the
    xTB-relaxed ``start``), its backbone torsions as CVs (coverage: the mean over torsion pairs),
    its own held-out xTB test set (``molecule_test_set.py``), the same targets with the
    spread-over-torsions frames (``conf``) in place of the Ramachandran ones."""
    import molecule_test_set

    from uq_bias.campaign.cvs import torsion_cvs

    found = variants(size, hot, defaults=True)
    biased, plain, hot_name = (v.name for v in found)
    base = base_config(size)
    base["data"]["structures"] = str(start_file)
    test_set = TestSet(
        molecule_test_set.NAME,
        molecule_test_set.MoleculeSpec.of(start, quick),
        molecule_test_set.make,
        (Subset("conf", "conf"), Subset("md", "md")),
        about="held-out GFN2-xTB frames spread over its torsions",
    )
    targets = (
        Ratio("explored", biased, plain, TARGET_VS_PLAIN, "explored coverage"),
        Ratio("explored", biased, hot_name, TARGET_VS_HOT, "explored coverage"),
        Lowest("conf_forces_rmse", biased, "force RMSE on the spread-over-torsions frames", "eV/A"),
    )
    return Case("exploration", base, found, test_set, targets, tuple(torsion_cvs(start)), start)


def stability(outcome, args, start) -> list[str]:
    """Survival curves of plain MD (``md_stability.py``) with the model of every campaign at
    each label count of ``--stability-labels`` it reached (default: its last), at each of
    ``--stability-temperatures``; the models run ``--jobs`` at a time (processes)."""
    import md_stability
    from tqdm import tqdm

    from uq_bias.campaign.state import CampaignState

    steps = int(round(args.stability_ps * 1000 / md_stability.TIMESTEP_FS))
    jobs, names = [], []
    for (name, seed), folder in outcome.folders.items():
        rows = outcome.results[(name, seed)]
        wanted = args.stability_labels or [rows[-1]["n_labelled"]]
        for row in rows:
            if row["n_labelled"] in wanted:
                model = CampaignState(folder).iteration_dir(row["iteration"]) / "model"
                jobs.append((str(model / "member_0.model"), start, args, steps))
                names.append(f"{name} s{seed} {row['n_labelled']} labels")
    temps = ", ".join(f"{t:g}" for t in args.stability_temperatures)
    lines = [
        f"MD stability: survival S(t) of {args.stability_runs} plain Langevin runs of "
        f"{args.stability_ps:g} ps (0.5 fs, batched engine) per model and temperature ({temps} K), "
        "from the xTB-relaxed structure; failed: a blow-up or a bond stretched past 1.5 x its "
        "covalent radii sum",
        "",
    ]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), initializer=quiet) as pool:
        done = tqdm(pool.map(_survival, jobs), "MD stability", total=len(jobs), unit="model")
        rows = [(n, s) for n, out in zip(names, done) for s in out]
    lines += md_stability.curve_table(rows)
    print("\n".join(lines), flush=True)
    return lines


def _survival(job: tuple):
    """md_stability.survival of one model, in a worker process (one thread)."""
    import torch
    from md_stability import survival

    model, start, args, steps = job
    torch.set_num_threads(1)
    return survival(model, start, args.stability_temperatures, args.stability_runs, steps)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, short walkers: < 10 min")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--structure",
        type=Path,
        help="any molecule instead of alanine dipeptide: a file ASE reads (first structure)",
    )
    which.add_argument("--smiles", help="any molecule instead of alanine dipeptide, as SMILES")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--hot", type=float, default=1200.0, help="temperature of hot plain MD, K")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "exploration")
    p.add_argument("--cache", type=Path, default=alanine_test_set.DEFAULT_CACHE)
    p.add_argument(
        "--jobs",
        type=int,
        default=3,
        help="campaigns (and stability models) run at once, processes; 3: a seed's three together",
    )
    p.add_argument("--no-stability", action="store_true", help="skip the MD-stability runs")
    p.add_argument("--stability-runs", type=int, help="runs per temperature (32; --quick 8)")
    p.add_argument("--stability-ps", type=float, help="length of each run, ps (2; --quick 0.25)")
    p.add_argument(
        "--stability-temperatures",
        type=float,
        nargs="+",
        default=[300.0, 600.0, 900.0],
        help="temperatures of the stability runs, K",
    )
    p.add_argument(
        "--stability-labels",
        type=int,
        nargs="+",
        help="label counts whose models run the stability test (default: each campaign's last)",
    )
    p.add_argument(
        "--defaults",
        action="store_true",
        help="alanine dipeptide with the package's default bias and watchdog (as any molecule "
        "runs), not the settings spelt out here; the bias and watchdog overrides do not apply",
    )
    p.add_argument("--tau-rel", type=float, help="override the bias strength tau_rel")
    p.add_argument("--window", type=int, help="override the bias window, steps")
    p.add_argument(
        "--start",
        choices=["structures", "labelled", "last"],
        help="where walkers start (all campaigns)",
    )
    p.add_argument("--h-weight", type=float, help="bias weight of hydrogen atoms (default 1)")
    p.add_argument(
        "--energy-rise", type=float, help="biased walkers: max energy rise, eV/atom (0.1; 0 off)"
    )
    p.add_argument(
        "--energy-drop",
        type=float,
        help="biased walkers: max energy drop below the first frame, eV/atom (0.05; 0 off)",
    )
    p.add_argument(
        "--max-uncertainty",
        type=float,
        help="biased walkers: stop at a calibrated atom uncertainty above this, eV/A (0 off)",
    )
    p.add_argument(
        "--distance-ratio",
        type=float,
        help="biased walkers: min distance / covalent radii sum (0.6; 0 off)",
    )
    p.add_argument(
        "--bond-stretch",
        type=float,
        help="all walkers: max bond length / covalent radii sum (1.5; 0 off)",
    )
    p.add_argument(
        "--restarts", type=int, help="all walkers: restarts after a blow-up per walk (5)"
    )
    p.add_argument(
        "--project", choices=["none", "torsions"], help="biased walkers: bias projection"
    )
    p.add_argument(
        "--fade",
        type=float,
        nargs=2,
        metavar=("A", "B"),
        help="biased walkers: fade the bias out from A to B eV/atom above the lowest energy; "
        "0 0: never",
    )
    p.add_argument(
        "--only", choices=["biased", "plain", "hot"], nargs="+", help="run only these campaigns"
    )
    return p


def size_of(args: argparse.Namespace) -> Size:
    """The preset (``--quick`` or default) with the command line's overrides."""
    size = QUICK if args.quick else DEFAULT
    overrides = {"tau_rel": args.tau_rel, "window": args.window, "start": args.start}
    overrides["h_weight"] = args.h_weight
    overrides["energy_rise"] = args.energy_rise
    overrides["energy_drop"] = args.energy_drop
    overrides["max_uncertainty"] = args.max_uncertainty
    overrides["distance_ratio"] = args.distance_ratio
    overrides["project"] = args.project
    overrides["bond_stretch"] = args.bond_stretch
    overrides["restarts"] = args.restarts
    if args.fade is not None:
        overrides["fade"] = tuple(args.fade) if args.fade[1] > 0 else None
    return Size(**{**asdict(size), **{k: v for k, v in overrides.items() if v is not None}})


def describe(size: Size, seeds: list[int], defaults: bool = False) -> str:
    if defaults:  # any molecule: the package's default bias and watchdog
        return (
            f"{size.preset} MACE, {size.initial} initial + {size.iterations} x {size.batch} "
            f"labels, {size.walkers} walkers x {size.steps} steps (0.5 fs) from {size.start}, "
            f"the package's default bias and watchdog, seeds {seeds}"
        )
    return (
        f"{size.preset} MACE, {size.initial} initial + {size.iterations} x {size.batch} labels, "
        f"{size.walkers} walkers x {size.steps} steps (0.5 fs) from {size.start}, tau_rel "
        f"{size.tau_rel}, window {size.window}, energy rise {size.energy_rise} / drop "
        f"{size.energy_drop} eV/atom, "
        f"distance ratio {size.distance_ratio}, seeds {seeds}"
    )


def main(argv=None) -> int:
    quiet()
    p = parser()
    args = p.parse_args(argv)
    args.stability_runs = args.stability_runs or (8 if args.quick else 32)
    args.stability_ps = args.stability_ps or (0.25 if args.quick else 2.0)
    size = size_of(args)
    shared = {k: v for k, v in asdict(size).items() if k not in BIAS_ONLY}
    key = hashlib.sha1(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:8]
    folder = f"{'quick' if args.quick else 'default'}_{key}"  # one folder per size
    any_molecule = args.structure is not None or args.smiles is not None
    if any_molecule:
        import molecule_input

        try:  # every check before anything is written
            raw, name, words = molecule_input.molecule(args.structure, args.smiles)
        except molecule_input.InputError as err:
            p.error(str(err))
        start = molecule_input.relaxed(raw, args.cache)
        out = args.out / f"{name}_{folder}"
        out.mkdir(parents=True, exist_ok=True)
        start_file = out / "start.xyz"
        start.write(start_file)
        the_case = molecule_case(size, args.hot, start, start_file, args.quick)
        about = f"{words}: {len(start)} atoms, {len(the_case.cvs)} backbone torsions; "
    else:
        spec = alanine_test_set.QUICK if args.quick else alanine_test_set.TestSetSpec()
        the_case, out = case(size, args.hot, spec, args.defaults), args.out / folder
        about = ""
    kinds = dict(zip(("biased", "plain", "hot"), the_case.names()))
    options = RunOptions(
        seeds=tuple(args.seeds),
        out=out,
        command=command_line("benchmarks/exploration.py", argv),
        describe=about + describe(size, args.seeds, any_molecule or args.defaults),
        jobs=args.jobs,
        cache=args.cache,
        only=tuple(kinds[k] for k in args.only) if args.only else None,
    )
    outcome = benchmark(the_case, options)
    if outcome is None:  # --only: the table waits for a run with all three
        return 0
    if not args.no_stability:
        start = the_case.reference if any_molecule else alanine_test_set.relaxed_start()
        start.calc = None
        outcome.lines += ["", *stability(outcome, args, start)]
    finish(the_case, options, outcome, {"size": asdict(size)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
