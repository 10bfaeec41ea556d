"""`uq-bias` command line: a thin skin over the Python API.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets
``func`` to a small function calling the Python API. Every feature here is reachable from Python.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings

#: Third-party warnings that tell a uq-bias user nothing they can act on: (category, message
#: regex, module regex). TorchScript's type-system notes come from mace's scripted modules (and
#: are attributed to the ``ast`` module), e3nn warns about its own ``torch.load``, Lightning
#: about its own use of deprecated torch APIs.
QUIET_WARNINGS = (
    (Warning, "", r"(torch|e3nn|mace|lightning|lightning_fabric|pytorch_lightning|torchmetrics)\b"),
    (UserWarning, r"The TorchScript type system", ""),
    (Warning, r".*(LeafSpec|torch\.load|TorchScript|torch\.jit)", ""),
)


def _add_train(sub) -> None:
    """`uq-bias train`: see uq_bias.training.train."""
    p = sub.add_parser("train", help="train (or fine-tune) a MACE model on extended XYZ")
    p.add_argument("--train", required=True, help="training data, extended XYZ")
    p.add_argument("--valid", required=True, help="validation data, extended XYZ")
    p.add_argument("--out", required=True, help="model file to write (a normal MACE model)")
    p.add_argument("--init", help="MACE model file to fine-tune instead of a fresh model")
    p.add_argument("--preset", default="tiny", help="fresh model size: tiny, small, medium")
    p.add_argument("--cutoff", type=float, default=5.0, help="fresh model cutoff, A")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--forces-weight", type=float, default=10.0)
    p.add_argument("--stress-weight", type=float, default=100.0)
    p.add_argument("--ema-decay", type=float, default=0.99, help="0 disables the EMA (with warmup)")
    p.add_argument("--scheduler", default="plateau", choices=["plateau", "cosine", "none"])
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience, epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")
    p.add_argument("--log", default="auto", help="per-epoch CSV ('auto': <out>_metrics.csv)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="auto")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--no-progress-bar", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from uq_bias.training import FitOptions, LabelKeys, LossWeights, TrainerOptions, train

    devices = int(args.devices) if args.devices.isdigit() else args.devices
    path = train(
        args.train,
        args.valid,
        args.out,
        init=args.init,
        preset=args.preset,
        cutoff=args.cutoff,
        dtype=args.dtype,
        keys=LabelKeys(args.energy_key, args.forces_key, args.stress_key),
        options=FitOptions(
            max_epochs=args.max_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weights=LossWeights(args.energy_weight, args.forces_weight, args.stress_weight),
            ema_decay=args.ema_decay or None,
            scheduler=args.scheduler,
            patience=args.patience,
            seed=args.seed,
        ),
        trainer_options=TrainerOptions(
            accelerator=args.accelerator,
            devices=devices,
            num_nodes=args.num_nodes,
            strategy=args.strategy,
            progress_bar=not args.no_progress_bar,
        ),
        log=None if args.log == "none" else args.log,
    )
    print(path)
    return 0


def _add_select(sub) -> None:
    """`uq-bias select`: see uq_bias.selection.select."""
    p = sub.add_parser("select", help="pick the k pool frames most worth labelling")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--unc", help="uncertainty model directory (uq_bias.uncertainty.load)")
    src.add_argument("--features", help="precomputed (n_pool, D) posterior features, .pt or .npy")
    p.add_argument("--pool", required=True, help="candidate frames, extended XYZ")
    p.add_argument("--k", type=int, required=True, help="number of frames to select")
    p.add_argument("--out", required=True, help="selected frames to write, extended XYZ")
    p.add_argument("--method", default="maxdet", choices=["maxdet", "maxdist", "lcmd", "random"])
    p.add_argument("--seed", type=int, default=0, help="seed of --method random")
    p.add_argument("--chunk-size", type=int, default=64, help="frames per batch for features")
    p.set_defaults(func=_run_select)


def _run_select(args) -> int:
    from ase.io import read

    from uq_bias.selection import select
    from uq_bias.selection.io import annotate, load_features, write_frames

    frames = read(args.pool, index=":")
    model, features = None, None
    if args.features:
        features = load_features(args.features)
    else:
        from uq_bias.uncertainty import load

        model = load(args.unc)
    sel = select(
        model,
        frames,
        args.k,
        args.method,
        features=features,
        seed=args.seed,
        chunk_size=args.chunk_size,
    )
    write_frames(args.out, annotate(frames, sel))
    print(f"selected {len(sel)} of {len(frames)} frames with {sel.method} -> {args.out}")
    if sel.n_filled:
        print(f"  the last {sel.n_filled} add nothing new (duplicates or rank used up)")
    for rank, (index, score) in enumerate(zip(sel.indices, sel.scores)):
        print(f"  {rank:4d}  pool frame {index:6d}  score {score:.6g}")
    return 0


def _add_md(sub) -> None:
    """`uq-bias md`: see uq_bias.dynamics.explore."""
    p = sub.add_parser("md", help="uncertainty-biased exploration MD with a watchdog")
    p.add_argument("--unc", required=True, help="uncertainty model directory (uncertainty.load)")
    p.add_argument("--start", required=True, help="start structure(s), any ASE-readable file")
    p.add_argument("--out", required=True, help="kept frames, extended XYZ (_w<k> per walker)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    strength = p.add_mutually_exclusive_group()
    strength.add_argument("--tau", type=float, help="absolute bias strength (E_b = E - tau U)")
    strength.add_argument("--tau-rel", type=float, help="bias force / physical force ratio")
    p.add_argument("--window", type=int, default=100, help="steps averaged for --tau-rel")
    p.add_argument(
        "--weight", action="append", default=[], metavar="EL=W", help="bias weight, e.g. H=0"
    )
    p.add_argument("--npt", action="store_true", help="NPT (MTK barostat; periodic cells only)")
    p.add_argument("--pressure", type=float, default=0.0, help="NPT pressure, GPa")
    p.add_argument("--walkers", type=int, default=1)
    p.add_argument("--sample-every", type=int, default=10, help="keep a frame every n steps")
    p.add_argument("--max-uncertainty", type=float, help="stop when max_i u_i exceeds, eV/A")
    p.add_argument("--max-hal-ratio", type=float, help="stop when max_i u_i/(|F_i|+eps) exceeds")
    p.add_argument("--min-distance", type=float, default=0.5, help="A")
    p.add_argument("--max-force", type=float, default=50.0, help="eV/A")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_md)


def _weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        element, sep, value = item.partition("=")
        try:
            weights[element.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--weight expects ELEMENT=WEIGHT such as H=0, got {item!r}")
    return weights


def _run_md(args) -> int:
    from ase.io import read

    from uq_bias.bias import BiasConfig
    from uq_bias.dynamics import CalculatorRecipe, ExploreConfig, WatchdogConfig, explore

    bias = None
    weights = _weights(args.weight)
    if args.tau is not None or args.tau_rel is not None:
        bias = BiasConfig(tau=args.tau, tau_rel=args.tau_rel, window=args.window, weights=weights)
    elif weights:
        raise ValueError("--weight needs a bias: give --tau or --tau-rel")
    watchdog = WatchdogConfig(
        max_uncertainty=args.max_uncertainty,
        max_hal_ratio=args.max_hal_ratio,
        min_distance=args.min_distance,
        max_force=args.max_force,
    )
    config = ExploreConfig(
        steps=args.steps,
        timestep=args.timestep,
        temperature=args.temperature,
        ensemble="npt" if args.npt else "nvt",
        pressure=args.pressure,
        sample_every=args.sample_every,
        watchdog=watchdog,
        seed=args.seed,
        progress=not args.no_progress,
    )
    starts = read(args.start, index=":")
    recipe = CalculatorRecipe(str(args.unc), bias=bias)
    result = explore(recipe, starts, config, walkers=args.walkers, trajectory=args.out)
    for walker in result.walkers:
        print(
            f"walker {walker.index}: {walker.stop_reason} at step {walker.stop_step}, "
            f"{len(walker.frames)} frames, max u_i {walker.max_uncertainty:.4g} eV/A -> "
            f"{walker.trajectory}" + (f" ({walker.message})" if walker.message else "")
        )
    return 0


COMMANDS = [_add_train]
COMMANDS.append(_add_select)


def _add_run(sub) -> None:
    """`uq-bias run campaign.yaml`: see uq_bias.campaign.run."""
    p = sub.add_parser("run", help="run or resume an active-learning campaign from a YAML file")
    p.add_argument("config", help="campaign YAML file (see docs/config.md)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_run_campaign)


def _run_campaign(args) -> int:
    from uq_bias.campaign import run

    bars = not args.quiet and sys.stderr.isatty()
    result = run(args.config, progress=None if args.quiet else print, bars=bars)
    print(f"report: {result.report}")
    return 0


def _add_demo(sub) -> None:
    """`uq-bias demo`: see uq_bias.campaign.demo."""
    p = sub.add_parser("demo", help="run the built-in alanine-dipeptide campaign (GFN2-xTB)")
    p.add_argument("--folder", default="uq_bias_demo", help="campaign folder to (re)use")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from uq_bias.campaign import demo

    demo(args.folder, quiet=args.quiet)
    return 0


COMMANDS += [_add_run, _add_demo]
COMMANDS.append(_add_md)


def _add_calibrate(sub) -> None:
    """`uq-bias calibrate`: see uq_bias.uncertainty.workflow.fit_and_calibrate."""
    p = sub.add_parser("calibrate", help="fit and calibrate an uncertainty model, write a report")
    p.add_argument(
        "--model", action="append", required=True, help="model file; repeat for an ensemble"
    )
    p.add_argument("--train", help="training frames (extended XYZ); gradient features only")
    p.add_argument("--valid", required=True, help="labelled validation frames (extended XYZ)")
    p.add_argument("--out", required=True, help="output folder (model state, report, plot)")
    p.add_argument("--method", default="posterior", choices=["posterior", "distance"])
    p.add_argument(
        "--features", default="last_layer", choices=["last_layer", "sketch", "all_readouts"]
    )
    p.add_argument("--sketch-dim", type=int, default=512)
    p.add_argument("--sigma", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head", help="head of a multi-head MACE model")
    p.add_argument("--calibration", default="conformal", choices=["conformal", "likelihood"])
    p.add_argument("--alpha", type=float, default=0.1, help="miscoverage level of conformal")
    p.add_argument("--per-element", action="store_true", help="one force factor per element")
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args) -> int:
    from uq_bias.uncertainty.workflow import fit_and_calibrate

    _, report = fit_and_calibrate(
        args.model,
        args.valid,
        args.out,
        train=args.train,
        calibration=args.calibration,
        alpha=args.alpha,
        per_element=args.per_element,
        method=args.method,
        features=args.features,
        sketch_dim=args.sketch_dim,
        sigma=args.sigma,
        seed=args.seed,
        head=args.head,
    )
    for name in ("energy", "forces"):
        m = report[name]["calibrated"]
        print(
            f"{name}: coverage {m['coverage']:.3f}, NLL {m['nll']:.3f}, miscalibration area "
            f"{m['miscalibration_area']:.3f}, Spearman {m['spearman']:.3f}"
        )
    print(f"wrote {args.out}")
    return 0


COMMANDS.append(_add_calibrate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uq-bias",
        description="Calibrated uncertainty, uncertainty-biased MD and active learning for MLIPs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


@contextlib.contextmanager
def quiet_third_party():
    """While a command runs: the warnings of :data:`QUIET_WARNINGS` off (restored after), and
    mace imported with its import-time notice on stdout (about cuequivariance) swallowed."""
    with warnings.catch_warnings():
        for category, message, module in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message, category, module)
        with contextlib.redirect_stdout(io.StringIO()):
            with contextlib.suppress(ImportError):
                import mace.tools.cg  # noqa: F401
        yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with quiet_third_party():
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
        print(f"uq-bias {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
