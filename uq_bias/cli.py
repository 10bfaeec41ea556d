"""`uq-bias` command line: a thin skin over the Python API.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets
``func`` to a small function calling the Python API. Every feature here is reachable from Python.
The options are generated from the library's option types (:mod:`uq_bias.flags`), so a flag and
its default are declared once, on the type that uses it.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import logging
import shlex
import sys
import warnings
from pathlib import Path

from uq_bias.errors import StageError
from uq_bias.flags import add_options, collect
from uq_bias.interrupts import exit_status, signal_name, signal_of, sigterm_interrupts

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
    from uq_bias.training import FitOptions, LabelKeys, TrainerOptions
    from uq_bias.training.build import ModelOptions

    p = sub.add_parser("train", help="train (or fine-tune) a MACE model on extended XYZ")
    p.add_argument("--train", required=True, help="training data, extended XYZ")
    p.add_argument("--valid", required=True, help="validation data, extended XYZ")
    p.add_argument("--out", required=True, help="model file to write (a normal MACE model)")
    p.add_argument("--init", help="MACE model file to fine-tune instead of a fresh model")
    p.add_argument("--log", default="auto", help="per-epoch CSV ('auto': <out>_metrics.csv)")
    add_options(p, ModelOptions, dest="model")
    add_options(p, FitOptions, dest="fit")
    add_options(p, TrainerOptions, dest="trainer")
    add_options(p, LabelKeys, dest="keys", prefix="key-")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from uq_bias.training import FitOptions, LabelKeys, TrainerOptions, train
    from uq_bias.training.build import ModelOptions

    model = collect(args, ModelOptions, dest="model")
    with _info_to_stderr("uq_bias.training"):  # e.g. the refitted reference energies
        path = train(
            args.train,
            args.valid,
            args.out,
            init=args.init,
            preset=model.preset,
            cutoff=model.cutoff,
            dtype=model.dtype,
            keys=collect(args, LabelKeys, dest="keys", prefix="key-"),
            options=collect(args, FitOptions, dest="fit"),
            trainer_options=collect(args, TrainerOptions, dest="trainer"),
            log=None if args.log == "none" else args.log,
        )
    print(path)
    return 0


@contextlib.contextmanager
def _info_to_stderr(name: str):
    """Info messages of the logger ``name`` go to stderr (the stream current at each message)
    inside; the logger's level and handlers are restored after."""

    class _Stderr(logging.Handler):
        def emit(self, record):
            print(f"uq-bias: {self.format(record)}", file=sys.stderr)

    logger, handler = logging.getLogger(name), _Stderr()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _add_select(sub) -> None:
    """`uq-bias select`: see uq_bias.selection.select."""
    from uq_bias.selection import SelectionOptions

    p = sub.add_parser("select", help="pick the k pool frames most worth labelling")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--unc", help="uncertainty model directory (uq_bias.uncertainty.load)")
    src.add_argument("--features", help="precomputed (n_pool, D) posterior features, .pt or .npy")
    p.add_argument("--pool", required=True, help="candidate frames, extended XYZ")
    p.add_argument(
        "--k",
        type=int,
        required=True,
        help="number of frames to select (1 or more); frames that would add nothing new are "
        "not written, so fewer may come",
    )
    p.add_argument("--out", required=True, help="selected frames to write, extended XYZ")
    p.add_argument(
        "--labelled",
        help="frames already labelled (any role), extended XYZ: condition the selection on "
        "them (with --unc; an ensemble then selects full batches on its members' features)",
    )
    add_options(p, SelectionOptions, dest="selection")
    p.set_defaults(func=_run_select)


#: Exit status of `uq-bias select` when it picks no frame (nothing written).
NOTHING_SELECTED = 3


def _run_select(args) -> int:
    from dataclasses import asdict, replace

    from uq_bias.graph import check_frames
    from uq_bias.io_structures import read_structures
    from uq_bias.outputs import check_not_input, check_xyz_name
    from uq_bias.selection import SelectionOptions, select
    from uq_bias.selection.io import annotate, check_output, load_features, write_frames

    options = collect(args, SelectionOptions, dest="selection")
    if args.k < 1:
        raise ValueError(f"--k: the number of frames to select must be 1 or more, got {args.k}")
    # the output before the pool's features are computed
    inputs = [(args.pool, "--pool", "pool"), (args.labelled, "--labelled", "labelled frames")]
    check_not_input(args.out, "--out", inputs, "the selection")
    check_output(args.out, "--out")
    check_xyz_name(args.out, "--out")
    frames = read_structures(args.pool, "pool (--pool)")
    model, features = None, None
    if args.features:
        features = load_features(args.features)
    else:
        from uq_bias.uncertainty import load

        model = load(args.unc)
        check_frames(frames, f"pool (--pool) {args.pool!r}", model.atomic_numbers)
    labelled = read_structures(args.labelled, "--labelled") if args.labelled else None
    if labelled is not None and features is not None:
        raise ValueError("--labelled conditions an uncertainty model (--unc), not --features")
    if labelled is not None:
        check_frames(labelled, f"--labelled {args.labelled!r}", model.atomic_numbers)
    sel = select(
        model, frames, args.k, features=features, labelled_frames=labelled, **asdict(options)
    )
    picked = len(sel) - sel.n_filled  # frames that add nothing new are not written
    sel = replace(sel, indices=sel.indices[:picked], scores=sel.scores[:picked], n_filled=0)
    if picked == 0:  # an empty file would replace an earlier selection, and reads as no frames
        kept = "left as it was (an earlier file, not this selection)"
        where = kept if Path(args.out).exists() else "not written"
        print(
            f"selected 0 of {args.k} asked from {len(frames)} pool frames with {sel.method}: "
            f"every pool frame would add nothing new (duplicates or rank used up); --out "
            f"{args.out!r} {where}; exit status {NOTHING_SELECTED}"
        )
        return NOTHING_SELECTED  # a script must not go on to label an earlier file
    write_frames(args.out, annotate(frames, sel))
    print(
        f"selected {picked} of {args.k} asked from {len(frames)} pool frames with {sel.method} "
        f"-> {args.out}"
    )
    if picked < min(args.k, len(frames)):
        print(
            f"  {min(args.k, len(frames)) - picked} more would add nothing new (duplicates or "
            "rank used up): not written"
        )
    for rank, (index, score) in enumerate(zip(sel.indices, sel.scores)):
        print(f"  {rank:4d}  pool frame {index:6d}  score {score:.6g}")
    return 0


def _add_md(sub) -> None:
    """`uq-bias md`: see uq_bias.dynamics.explore."""
    from uq_bias.bias import BiasConfig
    from uq_bias.dynamics import ExploreConfig

    p = sub.add_parser("md", help="uncertainty-biased exploration MD with a watchdog")
    p.add_argument("--unc", required=True, help="uncertainty model directory (uncertainty.load)")
    p.add_argument("--start", required=True, help="start structure(s), any ASE-readable file")
    p.add_argument("--out", required=True, help="kept frames, extended XYZ (_w<k> per walker)")
    p.add_argument("--walkers", type=int, default=1, help="independent walkers")
    add_options(p, ExploreConfig, dest="explore")
    add_options(p, BiasConfig, dest="bias")
    p.set_defaults(func=_run_md)


def _run_md(args) -> int:
    from uq_bias import Calculator
    from uq_bias.bias import BiasConfig
    from uq_bias.dynamics import ExploreConfig, explore
    from uq_bias.io_structures import read_structures
    from uq_bias.training.labels import check_elements
    from uq_bias.uncertainty import load

    config = collect(args, ExploreConfig, dest="explore")
    bias = collect(args, BiasConfig, dest="bias")
    if config.sample_every > config.steps:
        raise ValueError(
            f"--sample-every {config.sample_every} is more than --steps {config.steps}: a walker "
            f"keeps a frame every {config.sample_every} steps, so --out would get none (only a "
            f"frame where the watchdog stops a walker); give --sample-every {config.steps} or "
            "less, or more --steps"
        )
    _check_md_out(args.out, args.start, args.walkers)  # before anything is read
    starts = read_structures(args.start, "start structures (--start)")
    if len(starts) > args.walkers:
        print(
            f"note: {len(starts)} start structures and {args.walkers} walker(s): walker k starts "
            f"from structure k, so structures {args.walkers} to {len(starts) - 1} are not used "
            f"(--walkers {len(starts)} runs one walker from each)"
        )
    model = load(str(args.unc), device=config.device)
    for k, atoms in enumerate(starts):
        check_elements([atoms], model.atomic_numbers, f"{args.start}, structure {k},", "the model")
    result = explore(
        Calculator(model, bias=bias), starts, config, walkers=args.walkers, trajectory=args.out
    )
    for walker in result.walkers:
        print(
            f"walker {walker.index}: {walker.stop_reason} at step {walker.stop_step}, "
            f"{len(walker.frames)} frames, max u_i {walker.max_uncertainty:.4g} eV/A -> "
            f"{walker.trajectory}" + (f" ({walker.message})" if walker.message else "")
        )
    return 0


def _check_md_out(out: str, start: str, walkers: int) -> None:
    """Every file the walkers of `uq-bias md` write (``out``, or ``<stem>_w<k><suffix>``) is
    an extended-XYZ name, is not the --start file and can be written."""
    from uq_bias.dynamics import trajectory_paths
    from uq_bias.outputs import check_not_input, check_writable, check_xyz_name

    check_xyz_name(out, "--out")
    paths = trajectory_paths(out, walkers) if isinstance(walkers, int) and walkers > 1 else [out]
    for k, path in enumerate(paths):
        what = "--out" if len(paths) == 1 else f"--out (walker {k})"
        check_not_input(path, what, [(start, "--start", "start structures")], "the frames")
        check_writable(path, what)


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
    from uq_bias.campaign.demo import demo

    demo(args.folder, quiet=args.quiet)
    return 0


def _add_calibrate(sub) -> None:
    """`uq-bias calibrate`: see uq_bias.uncertainty.workflow.fit_and_calibrate."""
    from uq_bias.training.labels import LabelKeys
    from uq_bias.uncertainty.calibration import CalibrationOptions
    from uq_bias.uncertainty.gradient import UncertaintyOptions

    p = sub.add_parser("calibrate", help="fit and calibrate an uncertainty model, write a report")
    p.add_argument(
        "--model", action="append", required=True, help="model file; repeat for an ensemble"
    )
    p.add_argument("--train", help="training frames (extended XYZ); gradient features only")
    p.add_argument("--valid", required=True, help="labelled validation frames (extended XYZ)")
    p.add_argument("--out", required=True, help="output folder (model state, report, plot)")
    add_options(p, UncertaintyOptions, dest="uncertainty")
    add_options(p, CalibrationOptions, dest="calibration", prefix="calibration-")
    add_options(p, LabelKeys, dest="keys", prefix="key-")
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args) -> int:
    from uq_bias.training.labels import LabelKeys, read_frames
    from uq_bias.uncertainty.calibration import CalibrationOptions
    from uq_bias.uncertainty.gradient import UncertaintyOptions
    from uq_bias.uncertainty.workflow import fit_and_calibrate

    _check_ensemble_flags(args)
    keys = collect(args, LabelKeys, dest="keys", prefix="key-")
    valid = args.valid  # a path: its messages name the file; other keys: labelled frames
    if keys != LabelKeys():
        valid = read_frames(args.valid, keys)
    _, report = fit_and_calibrate(
        args.model,
        valid,
        args.out,
        train=args.train,
        options=collect(args, UncertaintyOptions, dest="uncertainty"),
        calibration=collect(args, CalibrationOptions, dest="calibration", prefix="calibration-"),
    )
    for name in ("energy", "forces"):
        m = report[name]["calibrated"]
        print(
            f"{name}: coverage {m['coverage']:.3f}, NLL {m['nll']:.3f}, miscalibration area "
            f"{m['miscalibration_area']:.3f}, Spearman {m['spearman']:.3f}"
        )
    for name, short in report.get("guaranteed_coverage", {}).items():
        if short["coverage"] < 1 - report["alpha"]:
            print(
                f"note: the conformal {name} factor comes from {short['values']} validation "
                f"value(s): it guarantees coverage {short['coverage']:.3f}, not 1 - alpha = "
                f"{1 - report['alpha']:.3f} (give more --valid frames, or a larger "
                "--calibration-alpha)"
            )
    print(f"wrote {args.out}")
    return 0


def _check_ensemble_flags(args) -> None:
    """With several --model (an ensemble), refuse the given flags that only the gradient-feature
    uncertainty of one model uses (an ensemble's uncertainty is the spread of its members)."""
    from uq_bias.flags import flag_name, given

    if len(args.model) < 2:
        return
    unused = ["--train"] if args.train is not None else []
    unused += [flag_name(key) for key in given(args, "uncertainty") if key != "head"]
    if unused:
        raise ValueError(
            f"{', '.join(unused)}: with {len(args.model)} --model files the uncertainty is the "
            "spread of the ensemble, which has no training fit, features, sigma or sketch, so "
            "these flags would do nothing; drop them, or give one --model for gradient-feature "
            "uncertainty"
        )


#: The subcommands, in the order of `uq-bias --help` and docs/cli.md.
COMMANDS = [_add_run, _add_demo, _add_train, _add_calibrate, _add_md, _add_select]


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


def _unknown_flags(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> None:
    """Exit 2 naming the flags ``command`` does not have, each with the closest ones it has."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subparser = sub.choices[command]
    known = [s for action in subparser._actions for s in action.option_strings]
    flags = [arg for arg in extra if arg.startswith("-")] or extra
    parts = []
    for arg in flags:
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1) if flag[:1] == "-" else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        parts.append(f"{arg!r}{hint}")
    # one line, no usage block: the hint and --help say more than 30 lines of usage would
    subparser.exit(
        2,
        f"{subparser.prog}: error: unrecognized arguments: {', '.join(parts)}; see "
        f"`uq-bias {command} --help`\n",
    )


#: How to resume each command that can be resumed after an interrupt.
RESUME = {"run": lambda a: f"uq-bias run {shlex.quote(a.config)}"}
RESUME["demo"] = lambda a: f"uq-bias demo --folder {shlex.quote(a.folder)}"


def interrupt_message(args: argparse.Namespace, err: KeyboardInterrupt) -> str:
    """One line: which signal, where the command stopped, and how to resume it."""
    text = f"interrupted by {signal_name(signal_of(err))}"
    where = getattr(err, "where", "")
    if where:
        text += f" in {where}"
    if args.command in RESUME:
        text += f"; finished stages are kept, resume with: {RESUME[args.command](args)}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run one ``uq-bias`` command. Returns the exit status: 0 done, 2 bad input (one line on
    stderr naming the file, key or flag), 130 / 143 interrupted by Ctrl-C / SIGTERM."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _unknown_flags(parser, args.command, extra)
    try:
        with sigterm_interrupts(), quiet_third_party():
            return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        print(f"uq-bias {args.command}: {interrupt_message(args, err)}", file=sys.stderr)
        return exit_status(err)
    except (ValueError, OSError, KeyError, TypeError, ImportError, StageError) as err:
        # ImportError: an optional extra is missing; its message names the pip extra
        print(f"uq-bias {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
