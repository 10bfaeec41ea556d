"""Does the bias stress buy a better potential per label? Cu3Al (EMT) and MIL-53(Al) (GFN1-xTB).

    python benchmarks/exploration_npt.py [--system cual|mil53] [--quick] [--seeds 0 1 2]
                                         [--jobs 3] [--out DIR] [--cache ~/.cache/uq_bias]
                                         [--no-properties]

Active-learning campaigns (``uq_bias.campaign.run``) that differ only in how they explore, all
under NPT (ASE's MTK barostat, full cell). ``--system cual`` (default): the Cu3Al alloy labelled
by EMT, from the builtin ``cual_fcc`` cell relaxed by EMT (or, with ``--start builtin``, from
the cell itself, compressed: 11.8 A^3/atom against EMT's 12.8). ``--system mil53``: the
MIL-53(Al) framework labelled by GFN1-xTB, from its large pore relaxed by GFN1-xTB
(``recipes/structures``), at 300 K with 600 K as hot and +-0.25 GPa on the ladder (the 2024
paper's MIL-53 runs).

* ``biased-<T>K``: uncertainty-biased forces and stress at T;
* ``biased-nostress-<T>K``: the same bias on the forces, none on the stress (``tau_rel_stress``
  0), so the difference to the first says what the bias stress buys;
* ``plain-<T>K`` and ``plain-<hot>K``: plain NPT at T and hot;
* ``ladder``: plain NPT, walker i at the (T, P) ladder point i (DP-GEN's way: for the alloy 300
  and 600 K at 0 and +-2.5 GPa, the pressures of the 2024 paper's MIL-53 runs scaled to a metal).

Same seeds, start, initial frames, model, training, selection (max-det) and label budget. Every
iteration's model is scored on a held-out test set no campaign sees (cached): for the alloy
(``cual_test_set.py``) NPT MD frames at several temperatures and pressures (``npt``), the liquid
(``liquid``) and compressed, stretched and sheared cells (``strain``); for MIL-53
(``mil53_test_set.py``) the breathing path from the large to the narrow pore (``path``), NPT MD
with GFN1-xTB (``npt``) and strained cells (``strain``). Coverage is that of cell space: the
volume per atom (A^3/atom) and the cell's shear (``uq_bias.campaign.cvs``), on grids as for
torsions. Properties of each final model against the reference on the same input: for the alloy
(``npt_properties.py``) the mean volume per atom from NPT MD at 300 K and 900 K, the bulk
modulus, and the volume per atom at the hot temperature; for MIL-53 (``mil53_properties.py``)
both pores' volumes and the energy between them.

PASS/MISS (mean over seeds at equal labels, and per seed): biased explores >= 1.5x the cell
space of plain NPT at T and >= that of hot NPT; its model has the lowest stress RMSE (alloy: on
the ``strain`` and ``npt`` frames; MIL-53: on the ``path`` and ``npt`` frames, and the lowest
force RMSE on ``path``) and the lowest mean relative property error. A table of the volumes
each campaign kept and picked (``cell_ranges.py``; for MIL-53 with the share of kept frames on
the narrow-pore side) says where they went. Writes the figure, ``table.md`` and
``results.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cell_ranges  # noqa: E402
import cual_test_set  # noqa: E402
import mil53_properties  # noqa: E402
import mil53_test_set  # noqa: E402
import npt_properties  # noqa: E402
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
from harness.testsets import DEFAULT_CACHE, load_or_make  # noqa: E402

TARGET_VS_PLAIN, TARGET_VS_HOT = 1.5, 1.0
#: V/N halfway between MIL-53's narrow (13.3 A^3/atom) and large pore (20.1) under GFN1-xTB
NARROW_BELOW = 16.7


@dataclass(frozen=True)
class Size:
    """Campaign size shared by every campaign (temperatures K, pressures GPa). The default is
    sized for one seed of five campaigns in about half an hour on 2 cores (``--jobs 2``)."""

    preset: str = "tiny"
    cutoff: float = 4.5
    initial: int = 8
    batch: int = 8
    iterations: int = 4
    walkers: int = 4
    steps: int = 300
    sample_every: int = 10
    max_epochs: int = 60
    temperature: float = 600.0
    hot: float = 1500.0
    tau_rel: float = 0.2
    window: int = 50
    #: MD step, fs
    timestep: float = 2.0
    #: where walkers start: "relaxed" (the builtin ``cual_fcc`` cell relaxed by EMT, positions
    #: and cell, 12.8 A^3/atom) or "builtin" (the cell itself, a = 3.61 A, 11.8 A^3/atom: every
    #: walker then begins with a compression transient, which the biased campaigns labelled)
    start: str = "relaxed"
    #: a sixth campaign, biased with the stress bias at a relative strength of its own
    #: (``bias.tau_rel_stress``); None: not run
    tau_rel_stress: float | None = None
    ladder: tuple[tuple[float, float], ...] = (
        (300.0, 0.0),
        (600.0, 0.0),
        (600.0, 2.5),
        (600.0, -2.5),
    )
    #: NPT MD length of each property, steps of 2 fs (equilibration, production)
    property_steps: tuple[int, int] = (400, 1200)

    @property
    def budget(self) -> int:
        return self.initial + self.batch * self.iterations


#: MIL-53(Al), 76 atoms, GFN1-xTB labels (about 2 s each): the temperatures and the +-250 MPa
#: of the 2024 paper's MIL-53 runs, 1 fs steps (hydrogen). Sized like the alloy's default.
MIL53 = Size(
    cutoff=5.0,
    iterations=4,
    walkers=4,
    steps=400,
    temperature=300.0,
    hot=600.0,
    timestep=1.0,
    ladder=((300.0, 0.0), (600.0, 0.0), (300.0, 0.25), (300.0, -0.25)),
)
MIL53_QUICK = replace(
    MIL53,
    initial=6,
    batch=4,
    iterations=2,
    walkers=2,
    steps=100,
    max_epochs=30,
    ladder=((300.0, 0.0), (300.0, 0.25)),
)

QUICK = Size(
    cutoff=4.0,
    iterations=2,
    walkers=2,
    steps=200,
    max_epochs=30,
    property_steps=(200, 400),
    ladder=((300.0, 0.0), (600.0, 2.5)),
)


def base_config(size: Size, start_file: Path | None = None, system: str = "cual") -> dict:
    """The campaign config every variant shares (all but its own exploration keys);
    ``start_file``: the start structure (default: the builtin cell); ``system``: "cual" (EMT
    labels, the watchdog's cell checks only, as these figures were measured before the k_B T
    defaults of issue 23) or "mil53" (GFN1-xTB labels, the package's default watchdog)."""
    exploration = {
        "walkers": size.walkers,
        "steps": size.steps,
        "timestep": size.timestep,
        "ensemble": "npt",
        "sample_every": size.sample_every,
        "restarts": 3,
    }
    if system == "cual":
        exploration["watchdog"] = {
            "max_energy_rise_kt": None,
            "max_energy_drop_kt": None,
            "min_distance_ratio": None,
            "max_bond_stretch": None,
        }
    else:  # a soft framework: the cell relaxes at the rate it would with its own modulus
        exploration["bulk_modulus"] = 10.0
    return {
        "data": {
            "structures": str(start_file) if start_file else "builtin:cual_fcc",
            "initial_frames": size.initial,
            "rattle": 0.05,
            "strain": 0.03,
        },
        "oracle": {"kind": "emt" if system == "cual" else "gfn1-xtb"},
        "model": {"preset": size.preset, "cutoff": size.cutoff},
        "training": {"max_epochs": size.max_epochs, "batch_size": 4, "weights": {"stress": 100.0}},
        "uncertainty": {"method": "posterior"},
        "calibration": {"method": "conformal", "alpha": 0.1},
        "exploration": exploration,
        "selection": {"method": "maxdet", "batch_size": size.batch},
        "stop": {"iterations": size.iterations, "label_budget": size.budget},
        "executor": {"kind": "inprocess"},
        "report": {"plots": True, "cvs": [asdict(cv) for cv in cell_cvs(system)]},
    }


def cell_cvs(system: str = "cual"):
    """Volume per atom and shear of the cell (``uq_bias.campaign.cvs``), in boxes that hold solid
    and liquid Cu3Al, or MIL-53(Al) from the narrow pore (GFN1-xTB: 13.3 A^3/atom, shear 0.83) to
    beyond the large pore (20.1 A^3/atom, shear 0.51): its shear, the distance of the cell's
    shape from a cube, is the breathing's second coordinate."""
    from uq_bias.campaign.cvs import CollectiveVariable

    volume, shear = ((10.0, 18.0), (0.0, 0.1)) if system == "cual" else ((11.0, 23.0), (0.3, 1.0))
    return (
        CollectiveVariable("volume", "volume", [], range=list(volume)),
        CollectiveVariable("shear", "shear", [], range=list(shear)),
    )


def variants(size: Size) -> tuple[Variant, ...]:
    """The five campaigns of the module docstring (and, with ``size.tau_rel_stress``, biased
    with the stress bias at that relative strength)."""
    t, hot = size.temperature, size.hot
    bias = {"tau_rel": size.tau_rel, "window": size.window, "fade_kt": None, "project": "none"}
    plain = {"tau": 0.0}
    tag = f"taurel{size.tau_rel:g}_w{size.window}"
    ladder = [list(point) for point in size.ladder]
    own = size.tau_rel_stress
    extra = (
        ()
        if own is None
        else (
            Variant(
                f"biased-stress{own:g}-{t:g}K",
                f"stress bias {own:g}",
                f"biased-stress{own:g}-{t:g}K_{tag}",
                {"temperature": t, "bias": {**bias, "tau_rel_stress": own}},
            ),
        )
    )
    return (
        Variant(
            f"biased-{t:g}K", "biased", f"biased-{t:g}K_{tag}", {"temperature": t, "bias": bias}
        ),
        Variant(
            f"biased-nostress-{t:g}K",
            "no stress bias",
            f"biased-nostress-{t:g}K_{tag}",
            {"temperature": t, "bias": {**bias, "tau_rel_stress": 0.0}},
        ),
        Variant(
            f"plain-{t:g}K", f"plain {t:g} K", f"plain-{t:g}K", {"temperature": t, "bias": plain}
        ),
        Variant(
            f"plain-{hot:g}K",
            f"plain {hot:g} K",
            f"plain-{hot:g}K",
            {"temperature": hot, "bias": plain},
        ),
        Variant(
            "ladder",
            "ladder",
            "ladder_" + "_".join(f"{a:g}K{b:g}GPa" for a, b in size.ladder),
            {"temperature": t, "bias": plain, "ladder": ladder},
        ),
    ) + extra


def case(size: Size, spec: cual_test_set.TestSetSpec, start_file: Path | None = None) -> Case:
    """The Cu3Al case: five campaigns (from ``start_file``, default the builtin cell), the
    held-out EMT test set, the targets."""
    found = variants(size)
    biased, _, plain, hot, _ = (v.name for v in found[:5])
    test_set = TestSet(
        cual_test_set.NAME,
        spec,
        cual_test_set.make,
        (Subset("strain", "strain"), Subset("npt", "npt"), Subset("liquid", "liquid")),
        about="held-out EMT frames (strained and sheared cells)",
    )
    targets = (
        Ratio("explored", biased, plain, TARGET_VS_PLAIN, "cell-space coverage"),
        Ratio("explored", biased, hot, TARGET_VS_HOT, "cell-space coverage"),
        Lowest("strain_stress_rmse", biased, "stress RMSE on the strained cells", "meV/A^3", 1e3),
        Lowest("npt_stress_rmse", biased, "stress RMSE on the NPT MD frames", "meV/A^3", 1e3),
    )
    base = base_config(size, start_file)
    return Case("exploration_npt", base, found, test_set, targets, cell_cvs(), None)


def mil53_case(size: Size, spec: mil53_test_set.TestSetSpec) -> Case:
    """MIL-53(Al) from the GFN1-xTB large pore: the five campaigns, the held-out GFN1-xTB set
    (``mil53_test_set.py``: the breathing path to the narrow pore first), the targets."""
    found = variants(size)
    biased, _, plain, hot, _ = (v.name for v in found[:5])
    test_set = TestSet(
        mil53_test_set.NAME,
        spec,
        mil53_test_set.make,
        (Subset("path", "path"), Subset("npt", "npt"), Subset("strain", "strain")),
        about="held-out GFN1-xTB frames on the breathing path",
    )
    targets = (
        Ratio("explored", biased, plain, TARGET_VS_PLAIN, "cell-space coverage"),
        Ratio("explored", biased, hot, TARGET_VS_HOT, "cell-space coverage"),
        Lowest("path_stress_rmse", biased, "stress RMSE on the breathing path", "meV/A^3", 1e3),
        Lowest("npt_stress_rmse", biased, "stress RMSE on the NPT MD frames", "meV/A^3", 1e3),
        Lowest("path_forces_rmse", biased, "force RMSE on the breathing path", "eV/A"),
    )
    start = mil53_test_set.LARGE_PORE
    base = base_config(size, start, system="mil53")
    return Case("exploration_npt_mil53", base, found, test_set, targets, cell_cvs("mil53"), None)


# -- properties of the final models against EMT -------------------------------------------------


def properties(calc, size: Size, seed: int = 0) -> dict[str, float]:
    """V/N at 300 K, 900 K and ``size.hot`` (A^3/atom, 0 GPa; the hot one a liquid where the
    alloy melts within the run) and B (GPa)."""
    start = cual_test_set.cual_cell(2, relaxed=True)
    equilibrate, production = size.property_steps
    run = dict(equilibrate=equilibrate, production=production, seed=seed)
    return {
        "volume_300K": npt_properties.npt_volume(start, calc, 300.0, **run).mean,
        "volume_900K": npt_properties.npt_volume(start, calc, 900.0, **run).mean,
        "bulk_modulus": npt_properties.bulk_modulus(start, calc),
        f"volume_{size.hot:g}K": npt_properties.npt_volume(start, calc, size.hot, **run).mean,
    }


def _model_properties(job: tuple) -> dict[str, float]:
    """The properties of one model file (a worker process, one thread), or of the reference
    (``path`` None): :func:`properties` for the alloy, ``mil53_properties`` for MIL-53."""
    import torch

    torch.set_num_threads(1)
    path, size, pores = job
    if path is None:
        if pores is not None:
            return mil53_properties.reference(pores)
        from ase.calculators.emt import EMT

        return properties(EMT(), size)
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=path, device="cpu", default_dtype="float64")
    return properties(calc, size) if pores is None else mil53_properties.properties(calc, pores)


def property_lines(folders: dict, size: Size, jobs: int, pores: list | None = None) -> list[str]:
    """A table of each final model's properties and relative errors against the reference
    (EMT, or with ``pores``, the GFN1-xTB minima of MIL-53)."""
    models = {
        key: str(sorted(Path(f).glob("iterations/*/model/member_0.model"))[-1])
        for key, f in folders.items()
    }
    with ProcessPoolExecutor(max_workers=max(1, jobs), initializer=quiet) as pool:
        found = list(
            pool.map(
                _model_properties,
                [(None, size, pores)] + [(m, size, pores) for m in models.values()],
            )
        )
    reference, predicted = found[0], dict(zip(models, found[1:]))
    names = list(reference)
    source = "GFN1-xTB" if pores else "EMT"
    how = (
        "both pores relaxed in positions and cell from GFN1-xTB's minima"
        if pores
        else "MTK NPT MD and a Birch-Murnaghan fit, same start and seeds"
    )
    lines = [
        f"Properties of the final models against the reference ({how}; relative error in brackets)",
        "",
        "| campaign | seed | " + " | ".join(names) + " | mean rel. error |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |",
        f"| {source} | - | " + " | ".join(f"{reference[n]:.3f}" for n in names) + " | - |",
    ]
    errors = {}
    for (name, seed), values in predicted.items():
        rel = {n: abs(values[n] / reference[n] - 1.0) for n in names}
        errors[(name, seed)] = float(np.mean(list(rel.values())))
        cells = " | ".join(f"{values[n]:.3f} ({rel[n]:.1%})" for n in names)
        lines.append(f"| {name} | {seed} | {cells} | {errors[(name, seed)]:.1%} |")
    lines += ["", *property_verdict(errors)]
    return lines


def property_verdict(errors: dict[tuple[str, int], float]) -> list[str]:
    """PASS/MISS per seed and on the mean: the biased campaign has the lowest property error."""
    names = list(dict.fromkeys(name for name, _ in errors))
    seeds = sorted({seed for _, seed in errors})
    lines = []
    for label, pick in [(f"seed {s}", [s]) for s in seeds] + [("mean over seeds", seeds)]:
        means = {n: float(np.mean([errors[(n, s)] for s in pick])) for n in names}
        best = min(means, key=means.get)
        mark = "PASS" if best == names[0] else "MISS"
        listed = ", ".join(f"{n} {v:.1%}" for n, v in means.items())
        lines.append(f"- {mark} ({label}): mean relative property error {listed} (lowest: {best})")
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, short walkers: < 10 min")
    p.add_argument(
        "--system",
        choices=["cual", "mil53"],
        default="cual",
        help="Cu3Al labelled by EMT, or MIL-53(Al) labelled by GFN1-xTB",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", help="campaign seeds (default 0 1 2; --quick: 0)"
    )
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "exploration_npt"
    )
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--jobs", type=int, default=2, help="campaigns run at once, processes")
    p.add_argument(
        "--tau-rel-stress",
        type=float,
        help="add a campaign biased with the stress bias at this relative strength of its own",
    )
    p.add_argument(
        "--start",
        choices=["relaxed", "builtin"],
        default="relaxed",
        help="walkers start from the builtin cell relaxed by EMT, or from the cell itself "
        "(8 %% compressed)",
    )
    p.add_argument("--no-properties", action="store_true", help="skip the properties' MD")
    p.add_argument("--only", nargs="+", help="run only these variants (names as in the table)")
    return p


def cual_setup(args) -> tuple[Size, Case, Path]:
    """The alloy's size, case and output folder from the command line."""
    size = QUICK if args.quick else Size()
    size = replace(size, tau_rel_stress=args.tau_rel_stress, start=args.start)
    spec = cual_test_set.QUICK if args.quick else cual_test_set.TestSetSpec()
    out = args.out / ("quick" if args.quick else "default")
    start_file = None
    if size.start == "relaxed":  # its own folder: the campaigns differ from the builtin start's
        out = out.with_name(out.name + "_relaxed")
        out.mkdir(parents=True, exist_ok=True)
        start_file = out / "start.extxyz"
        cual_test_set.cual_cell(2, relaxed=True).write(start_file)
    return size, case(size, spec, start_file), out


def mil53_setup(args) -> tuple[Size, Case, Path]:
    """MIL-53(Al)'s size, case and output folder from the command line."""
    size = replace(MIL53_QUICK if args.quick else MIL53, tau_rel_stress=args.tau_rel_stress)
    spec = mil53_test_set.QUICK if args.quick else mil53_test_set.TestSetSpec()
    out = args.out / ("mil53_quick" if args.quick else "mil53")
    return size, mil53_case(size, spec), out


def main(argv=None) -> int:
    quiet()
    args = parser().parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    setup = mil53_setup if args.system == "mil53" else cual_setup
    size, the_case, out = setup(args)
    options = RunOptions(
        seeds=tuple(args.seeds),
        out=out,
        command=command_line("benchmarks/exploration_npt.py", argv),
        describe=(
            f"{args.system}: {size.preset} MACE, {size.initial} + {size.iterations} x "
            f"{size.batch} labels, {size.walkers} walkers x {size.steps} NPT steps "
            f"({size.timestep:g} fs) at {size.temperature:g} K, hot {size.hot:g} K, "
            f"tau_rel {size.tau_rel}, start {size.start if args.system == 'cual' else 'lp'}, "
            f"seeds {list(args.seeds)}"
        ),
        jobs=args.jobs,
        cache=args.cache,
        only=tuple(args.only) if args.only else None,
    )
    outcome = benchmark(the_case, options)
    if outcome is None:
        return 0
    narrow = NARROW_BELOW if args.system == "mil53" else None
    lines = cell_ranges.range_lines(outcome.folders, narrow)
    print("\n".join(lines), flush=True)
    outcome.lines += ["", *lines]
    if not args.no_properties:
        pores = None
        if args.system == "mil53":
            spec = mil53_properties.PoresSpec(test_set=the_case.test_set.spec)
            pores, _ = load_or_make(mil53_properties.NAME, spec, mil53_properties.make, args.cache)
        lines = property_lines(outcome.folders, size, args.jobs, pores)
        print("\n".join(lines), flush=True)
        outcome.lines += ["", *lines]
    finish(the_case, options, outcome, {"size": asdict(size), "system": args.system})
    return 0


if __name__ == "__main__":
    sys.exit(main())
