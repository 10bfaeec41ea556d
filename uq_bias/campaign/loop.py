"""The active-learning loop, one function per stage, resumable at stage granularity.

Iteration 0 labels the first frames (rattled start structures and any ``initial_data``).
Iteration k >= 1 runs

    train -> uncertainty (fit + calibrate) -> metrics -> [stop?] -> explore -> select -> label
    -> evaluate -> merge

Each stage reads what earlier stages wrote to the campaign folder, writes its own files
atomically, and is then marked in the journal (see :mod:`uq_bias.campaign.state`). A campaign
killed at any moment is resumed by running it again: finished stages are skipped, the
interrupted one is redone, and work inside labelling and exploration is kept frame by frame
and walker by walker. Merging is idempotent (frames carry a content ``frame_id``), so every
label is in the data exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uq_bias.campaign import config as cfg
from uq_bias.campaign import console, explored, stages, validate
from uq_bias.campaign.executors import Executor, make_executor
from uq_bias.campaign.oracles import OracleSpec
from uq_bias.campaign.state import CampaignState, read_json, write_json
from uq_bias.interrupts import Interrupted, signal_name, signal_of, sigterm_interrupts

#: Config keys that define the data and the model (see :mod:`uq_bias.campaign.validate`).
FIXED = validate.FIXED


@dataclass
class CampaignResult:
    """What :func:`run` did.

    Attributes:
        folder: the campaign folder.
        report: path of report.md.
        iterations: the last iteration that trained a model.
        n_labelled: labelled frames in the data.
        reason: why the campaign stopped.
        seconds: wall-clock time of this call.
    """

    folder: Path
    report: Path
    iterations: int
    n_labelled: int
    reason: str
    seconds: float


class LazyExecutor:
    """Creates the configured executor on first use only (a resumed campaign whose remaining
    stages need no workers starts no cluster)."""

    def __init__(self, config: cfg.ExecutorConfig):
        self.config = config
        self._executor: Executor | None = None

    def get(self) -> Executor:
        if self._executor is None:
            c = self.config
            self._executor = make_executor(c.kind, c.workers, c.address, c.threads_per_worker)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def abort(self) -> None:
        """Close without waiting for running tasks (after an interrupt)."""
        if self._executor is not None:
            self._executor.abort()
            self._executor = None


def _check_resume(state: CampaignState, config: cfg.CampaignConfig) -> None:
    """See :func:`uq_bias.campaign.validate.check_resume`."""
    validate.check_resume(state, config)


def stop_reason(state: CampaignState, config: cfg.CampaignConfig, k: int) -> str | None:
    """Why the campaign stops after training iteration ``k``, or None to go on. The target
    RMSEs are judged on the test set when ``data.test`` is given, else on the validation
    frames (which the loop chose and stopped early on: optimistic)."""
    metrics = stages.read_metrics(state, k)
    where = "test" if "test" in metrics else "valid"
    errors = metrics.get(where, {})
    stop = config.stop
    if stop.target_forces_rmse is not None and errors.get("forces_rmse", np.inf) <= (
        stop.target_forces_rmse
    ):
        return f"target force RMSE reached on the {where} set ({errors['forces_rmse']:.4g} eV/A)"
    if stop.target_energy_rmse is not None and errors.get("energy_rmse_per_atom", np.inf) <= (
        stop.target_energy_rmse
    ):
        value = errors["energy_rmse_per_atom"]
        return f"target energy RMSE reached on the {where} set ({value:.4g} eV/atom)"
    n_labelled = len(state.labelled())
    if stop.label_budget is not None and n_labelled >= stop.label_budget:
        return f"label budget reached ({n_labelled} labelled frames)"
    if k > stop.iterations:
        return f"{stop.iterations} iterations done"
    return None


def _stage(ctx: stages.Context, k: int, name: str, fn: Callable | None = None) -> bool:
    """Run stage ``name`` of iteration ``k`` unless the journal has it; then mark it and add
    its wall time to ``iterations/NNN/timings.json``. Returns whether it ran."""
    if ctx.state.done(k, name):
        return False
    ctx.state.log(f"iteration {k}: {name} ...")
    ctx.state.running = f"iteration {k}, stage {name}"
    start = time.perf_counter()
    (fn or stages.STAGES[name])(ctx, k)
    path = ctx.dir(k) / console.TIMINGS
    write_json(path, {**read_json(path, {}), name: time.perf_counter() - start})
    ctx.state.mark(k, name)
    ctx.state.running = f"iteration {k}, after stage {name}"
    return True


def _bias_note(config: cfg.CampaignConfig, structures: list) -> str:
    """The campaign log's line on the bias: its strength, where it is projected on torsions
    (``project: auto`` decides from the bond graph) and its fade in eV/atom at the walkers'
    temperature."""
    from uq_bias.bias.projection import projection_note

    e = config.exploration
    bias = e.bias
    if bias.tau == 0:
        return "bias: off (tau 0: plain MD)"
    strength = f"tau {bias.tau}" if bias.tau is not None else f"tau_rel {bias.tau_rel}"
    fade = bias.fade_range(e.temperature)
    faded = "never" if fade is None else f"{fade[0]:.4g} to {fade[1]:.4g} eV/atom"
    note = projection_note(bias.project, bias.split, structures)
    return f"bias: {strength}; fade {faded} at {e.temperature:g} K; {note.removeprefix('bias: ')}"


def _summary(ctx: stages.Context, k: int) -> None:
    """The console line of iteration ``k`` (:mod:`uq_bias.campaign.console`)."""
    chosen = explored.campaign_cvs(ctx.config, ctx.structures)
    ctx.say(console.iteration_line(ctx.state, k, chosen, ctx.structures[0]))


def _check_inputs(config: cfg.CampaignConfig) -> list:
    """The start structures, after the checks that need them and the oracle (before any work)."""
    try:
        structures = stages.start_structures(config)
    except ImportError as err:  # a builtin molecule without RDKit
        raise cfg.ConfigError(f"config key 'data.structures': {err}") from err
    if config.exploration.ensemble == "npt" and not all(a.pbc.all() for a in structures):
        raise cfg.ConfigError(
            "config key 'exploration.ensemble': npt needs start structures periodic in all three "
            f"directions, and {config.data.structures!r} has a non-periodic one; use nvt"
        )
    if config.exploration.bias.project == "torsions" and any(a.pbc.any() for a in structures):
        raise cfg.ConfigError(
            f"config key 'exploration.bias.project': {config.exploration.bias.project} is for "
            f"molecules, and {config.data.structures!r} has a periodic structure; use auto or none"
        )
    oracle = config.oracle
    try:
        calculator = OracleSpec(oracle.kind, oracle.calculator, oracle.kwargs).build()
    except (ValueError, TypeError, ImportError, OSError) as err:
        raise cfg.ConfigError(f"config key 'oracle': cannot build the oracle: {err}") from err
    _check_oracle_stress(config, calculator)
    validate.check_campaign(config, structures)
    return structures


def _check_oracle_stress(config: cfg.CampaignConfig, calculator) -> None:
    """NPT moves the cell by the model's stress: the oracle must label stress (ASE's
    ``implemented_properties``), or no stress is ever fitted and the cell follows noise."""
    if config.exploration.ensemble != "npt":
        return
    implemented = list(getattr(calculator, "implemented_properties", []))
    if "stress" not in implemented:
        name = config.oracle.calculator or config.oracle.kind
        raise cfg.ConfigError(
            f"config key 'oracle': exploration.ensemble npt moves the cell by the model's "
            f"stress, and the oracle {name!r} computes no stress (implemented_properties "
            f"{implemented}), so the model would never learn one; use a calculator that gives "
            "stress (for DFT codes: switch the stress calculation on), or ensemble nvt"
        )


def _iterate(ctx: stages.Context) -> tuple[int, str]:
    """Iteration 0, then iterations until a stop rule holds; returns (last k, reason)."""
    _stage(ctx, 0, "label", stages.label_initial)
    _stage(ctx, 0, "merge")
    k = 1
    while True:
        ran = [_stage(ctx, k, name) for name in ("train", "uncertainty", "metrics")]
        # a resumed iteration that went on to merge had no stop then (the labels counted now
        # include its own batch and later ones)
        reason = None if ctx.state.done(k, "merge") else stop_reason(ctx.state, ctx.config, k)
        if reason is None:
            ran += [_stage(ctx, k, name) for name in ("explore", "select", "label", "evaluate")]
            ran.append(_stage(ctx, k, "merge"))
        elif not ctx.state.done(k, "label") and stages.labels_begun(ctx, k):
            ran += [_keep_paid(ctx, k, reason)]
        if any(ran):  # a resumed iteration that had nothing left to do prints nothing
            _summary(ctx, k)
        if reason is not None:
            return k, reason
        k += 1


def _keep_paid(ctx: stages.Context, k: int, reason: str) -> bool:
    """A stop rule holds in an iteration whose labelling was cut short (an interrupt, then
    the stop rules changed): the labels paid for reach the data, with no new oracle call."""
    ctx.state.log(f"iteration {k}: {reason}; keeping the labels its labelling had paid for")
    _stage(ctx, k, "label", stages.label_paid)
    _stage(ctx, k, "evaluate")
    return _stage(ctx, k, "merge")


def run(
    config: str | Path | cfg.CampaignConfig,
    *,
    progress: Callable[[str], None] | None = print,
    bars: bool = False,
) -> CampaignResult:
    """Run (or resume) the campaign described by a YAML file or a :class:`CampaignConfig`.

    Everything is checked before any work (config keys and types, start structures, oracle,
    model file, the first split: :mod:`uq_bias.campaign.validate`); the folder is created only
    then. Ctrl-C or SIGTERM raise :class:`uq_bias.interrupts.Interrupted` saying where the
    campaign stopped; finished stages are kept, and running it again resumes.
    ``progress`` receives one line per iteration (:mod:`uq_bias.campaign.console`; None for
    silence); ``bars`` shows progress bars for the MD walkers (in-process executor) and for
    training. Returns a :class:`CampaignResult`; the report is in ``<folder>/report/report.md``.
    """
    start = time.perf_counter()
    if not isinstance(config, cfg.CampaignConfig):
        config = cfg.load(config)
    structures = _check_inputs(config)
    state = CampaignState(config.path(config.folder or "campaign"))
    _check_resume(state, config)
    say = progress or (lambda message: None)
    ctx = stages.Context(state, config, LazyExecutor(config.executor), structures, say, bars)
    state.log(f"campaign run in {state.root}")
    state.log(_bias_note(config, structures))
    try:
        with sigterm_interrupts():  # SIGTERM (SLURM's time limit) stops it like Ctrl-C
            k, reason = _iterate(ctx)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: say where, keep what is finished
        where = f"{state.running or 'between stages'} (campaign folder {state.root})"
        state.log(f"interrupted by {signal_name(signal_of(err))} in {where}")
        ctx.executor.abort()
        raise Interrupted(signal_of(err), where) from None
    finally:
        ctx.executor.close()
    state.finish(reason)
    from uq_bias.campaign.report import write_report

    report = write_report(state, config)
    trained_on = stages.read_metrics(state, k).get("n_labelled", "?")
    say(
        f"campaign finished: {reason}; last model: iteration {k}, trained on {trained_on} "
        f"labels ({len(state.labelled())} labelled in all)"
    )
    seconds = time.perf_counter() - start
    return CampaignResult(state.root, report, k, len(state.labelled()), reason, seconds)
