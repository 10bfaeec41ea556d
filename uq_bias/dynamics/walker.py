"""One exploration walker: ASE molecular dynamics under the watchdog, keeping candidate frames.

A walker is a plain function call, :func:`run_walker` (``WalkerSpec -> WalkerResult``), with a
picklable spec, so that executors (process pools, Dask, SLURM) can run walkers elsewhere. The
calculator comes from ``spec.calculator``, a picklable zero-argument factory: each walker builds
its own, so the relative-bias window is per walker; ``spec.bias_state`` fills that window before
the first step and ``WalkerResult.bias_state`` hands it back at the end.

Integrators (ASE 3.29, none deprecated; the batched engine's are in
:mod:`uq_bias.dynamics.batched`):

* NVT: ``ase.md.langevin.Langevin`` (``fixcm=False``), friction ``friction`` (1/fs);
* NPT: ``ase.md.nose_hoover_chain.MTKNPT`` (full cell) or ``IsotropicMTKNPT`` (volume only),
  Martyna-Tobias-Klein barostat with Nose-Hoover chains; the cell moves under the calculator's
  stress, so a bias stress drives the cell too. Periodic systems only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator as ASECalculator

from uq_bias import keys
from uq_bias.device import check_device_name
from uq_bias.dynamics.watchdog import FOUND, RESTARTABLE, Verdict, Watchdog, WatchdogConfig
from uq_bias.options import option

Ensemble = Literal["nvt", "npt"]
NptCell = Literal["full", "isotropic"]
Engine = Literal["ase", "batched"]
ENSEMBLES = get_args(Ensemble)
NPT_CELLS = get_args(NptCell)
ENGINES = get_args(Engine)


MAX_PRESSURE_GPA = 1e4


def npt_pressure(config: ExploreConfig) -> float | None:
    """The external pressure (GPa) of an NPT walker, None under NVT (for the watchdog)."""
    return config.pressure if config.ensemble == "npt" else None


def check_pressure(pressure: float, where: str) -> None:
    """ValueError naming ``where`` unless ``pressure`` is finite and within +-MAX_PRESSURE_GPA
    (10 TPa, beyond any planetary interior): larger values are pressures in bar or Pa."""
    if not (math.isfinite(pressure) and abs(pressure) <= MAX_PRESSURE_GPA):
        raise ValueError(
            f"{where} {pressure!r} GPa is not a finite pressure within +-{MAX_PRESSURE_GPA:g} GPa; "
            "the unit is GPa (1 bar = 1e-4 GPa, 1 atm = 1.01325e-4 GPa, 1 Pa = 1e-9 GPa)"
        )


@dataclass(frozen=True)
class ExploreConfig:
    """Settings of an exploration run (molecular dynamics under the watchdog)."""

    steps: int = option(1000, "MD steps per walker.")
    timestep: float = option(
        0.5, "MD time step (0.5 fs keeps hydrogen stable under a bias).", unit="fs"
    )
    temperature: float = option(
        300.0, "Thermostat target and initial Maxwell-Boltzmann velocities.", unit="K"
    )
    ensemble: Ensemble = option(
        "nvt",
        "nvt (Langevin) or npt (periodic cells only; engine ase: MTK barostat, engine batched: "
        "stochastic cell rescaling with a Langevin thermostat).",
    )
    pressure: float = option(0.0, "External pressure of NPT.", unit="GPa")
    friction: float = option(0.01, "Langevin friction (NVT).", unit="1/fs")
    tdamp: float = option(
        100.0,
        "NPT thermostat time constant (engine batched: Langevin friction 1/tdamp).",
        unit="fs",
    )
    pdamp: float = option(
        1000.0,
        "NPT barostat time constant (engine batched: the cell's relaxation time when "
        "bulk_modulus is the true one).",
        unit="fs",
    )
    bulk_modulus: float = option(
        50.0,
        "Engine batched, NPT: the bulk modulus 1/beta_T that stochastic cell rescaling assumes; "
        "it sets only how fast the cell relaxes (in pdamp times assumed/true modulus), not what "
        "is sampled. 50 GPa: between metals (Cu 140) and frameworks or polymers (about 10), "
        "where it makes the cell 5x slower than pdamp: give such a system its own modulus.",
        unit="GPa",
    )
    npt_cell: NptCell = option(
        "full",
        "NPT cell motion: full (shape and volume) or isotropic (volume only). Engine ase with "
        "full runs ASE's MTKNPT, whose volume fluctuations measured twice too large here "
        "(docs/concepts.md); engine batched samples the NPT ensemble for both.",
    )
    sample_every: int = option(10, "Keep a candidate frame every this many steps.")
    watchdog: WatchdogConfig = option(WatchdogConfig(), "When a walker stops.")
    restarts: int = option(
        0,
        "After a blow-up (not an exception from the calculator), an energy rise or an energy "
        "drop, a walker starts again with fresh velocities for the steps it has left, at most "
        "this many times: from its start (in a campaign, its start structure, also with start: "
        "last); 0: it stops there.",
    )
    seed: int = option(0, "Base seed; walker k uses the seed sequence (seed, k).")
    progress: bool = option(True, "Show a progress bar.")
    engine: Engine = option(
        "ase",
        "ase: ASE integrators, one walker after another (NVT and NPT); batched: all walkers in "
        "one graph per MD step on the model's device (Langevin NVT; NPT by stochastic cell "
        "rescaling).",
    )
    batch_edges: int | None = option(
        None,
        "Batched engine: most neighbour pairs (graph edges) per model call, walkers go in "
        "chunks; null: all walkers in one call on a GPU, 6000 on the CPU (about 17 alanine "
        "dipeptides, or one 108-atom Cu cell at a 5 A cutoff).",
    )
    device: str | None = option(
        None,
        "Where the model runs during MD: auto, cpu, cuda or cuda:<k>; the model is moved there "
        "(null: where it is).",
    )

    def __post_init__(self):
        for name in ("steps", "sample_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"ExploreConfig: {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.restarts, int) and self.restarts >= 0):
            raise ValueError(
                f"ExploreConfig: restarts must be an integer >= 0, got {self.restarts!r}"
            )
        for name in ("timestep", "friction", "tdamp", "pdamp", "bulk_modulus"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ExploreConfig: {name} must be a number > 0, got {value!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"ExploreConfig: temperature must be >= 0 K, got {self.temperature}")
        check_pressure(self.pressure, "ExploreConfig: pressure")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ExploreConfig: ensemble {self.ensemble!r} not in {ENSEMBLES}")
        if self.pressure != 0 and self.ensemble != "npt":
            raise ValueError(
                f"ExploreConfig: pressure {self.pressure} GPa acts only in ensemble 'npt', and "
                f"ensemble is {self.ensemble!r}; set ensemble npt, or pressure 0"
            )
        if self.npt_cell not in NPT_CELLS:
            raise ValueError(f"ExploreConfig: npt_cell {self.npt_cell!r} not in {NPT_CELLS}")
        check_device_name(self.device, "ExploreConfig: device")
        if self.batch_edges is not None and not (
            isinstance(self.batch_edges, int) and self.batch_edges >= 1
        ):
            raise ValueError(
                f"ExploreConfig: batch_edges must be an integer >= 1 or None, got "
                f"{self.batch_edges!r}"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"ExploreConfig: engine {self.engine!r} not in {ENGINES}")


@dataclass
class WalkerSpec:
    """Everything one walker needs; picklable when ``calculator`` is.

    Attributes:
        index: walker number k (seeds and file names use it).
        start: the starting structure (not modified).
        calculator: zero-argument factory returning a fresh ASE calculator.
        config: the run settings.
        trajectory: extended-XYZ file the kept frames are appended to as they come, or None.
        bias_state: for a relative bias (tau_rel), the window to start from: a dict from
            :meth:`uq_bias.bias.RelativeStrength.state` (e.g. the previous walker's
            ``WalkerResult.bias_state``, or a seeded one), so the bias acts from step 1.
            None: the calculator's own window (tau = 0 until it is full).
        restart_start: where the walker starts again after a blow-up (``config.restarts``);
            None: ``start``. A walker that goes on from a frame far up the surface should start
            again from somewhere safe.
        restart_bias_state: the window it starts again from; None: ``bias_state``.
        segment: how many times the walker has started again before this run (0: a new
            walker); its random stream is the seed sequence (seed, index, segment).
        first_step: MD steps the walker ran before this segment; it runs
            ``config.steps - first_step`` more, and its frames' ``step`` goes on from here.
    """

    index: int
    start: Atoms
    calculator: Callable[[], ASECalculator]
    config: ExploreConfig
    trajectory: Path | None = None
    bias_state: dict | None = None
    restart_start: Atoms | None = None
    restart_bias_state: dict | None = None
    segment: int = 0
    first_step: int = 0


@dataclass
class WalkerResult:
    """What one walker found.

    Attributes:
        index: walker number.
        frames: candidate frames kept (every ``sample_every`` steps, plus the frame that tripped
            an uncertainty threshold), with the results in ``info`` / ``arrays``.
        stop_reason: "completed", "uncertainty", "hal", "non_finite", "max_force",
            "min_distance", "min_distance_ratio", "bond_stretch", "cell_volume", "cell_shear",
            "energy_rise", "energy_drop" or "error" (of its last segment when it started again).
        stop_step: the MD step at which the walker stopped (``steps`` when completed), counted
            over all its segments.
        message: a human-readable detail of the stop.
        max_uncertainty: the largest max_i u_i seen over all steps (eV/A; NaN without
            uncertainties).
        max_energy_uncertainty: the largest energy uncertainty U seen over all steps (eV).
        trajectory: the extended-XYZ file written, or None.
        bias_state: the relative-bias window when the walker stopped
            (:meth:`uq_bias.bias.RelativeStrength.state`), or None without a relative bias.
        restarts: one dict per time the walker started again, the stop before it: reason, step
            (counted from the walker's first step) and message.
    """

    index: int
    frames: list[Atoms]
    stop_reason: str
    stop_step: int
    message: str = ""
    max_uncertainty: float = float("nan")
    max_energy_uncertainty: float = float("nan")
    trajectory: Path | None = None
    bias_state: dict | None = None
    restarts: list[dict] = field(default_factory=list)


def restarted(spec: WalkerSpec, result: WalkerResult) -> WalkerSpec | None:
    """The walker's next segment after ``result`` (all it ran so far, from ``spec``'s first
    segment), or None when it is done: it completed or found a frame, has used its
    ``config.restarts``, or has fewer than ``sample_every`` steps left (nothing to keep)."""
    config = spec.config
    left = config.steps - result.stop_step
    if (
        result.stop_reason not in RESTARTABLE
        or len(result.restarts) >= config.restarts
        or left < config.sample_every
    ):
        return None
    return replace(
        spec,
        start=spec.start if spec.restart_start is None else spec.restart_start,
        bias_state=spec.bias_state if spec.restart_bias_state is None else spec.restart_bias_state,
        segment=spec.segment + len(result.restarts) + 1,
        first_step=result.stop_step,
    )


def joined(before: WalkerResult, after: WalkerResult) -> WalkerResult:
    """One walker's result from its run so far (``before``) and the segment that followed."""
    stop = {"reason": before.stop_reason, "step": before.stop_step, "message": before.message}
    after.frames = before.frames + after.frames
    after.restarts = [*before.restarts, stop]
    after.max_uncertainty = float(np.fmax(before.max_uncertainty, after.max_uncertainty))
    after.max_energy_uncertainty = float(
        np.fmax(before.max_energy_uncertainty, after.max_energy_uncertainty)
    )
    return after


def relative_strength(calculator: ASECalculator):
    """The :class:`uq_bias.bias.RelativeStrength` of a uq_bias calculator with a relative bias,
    else None."""
    bias = getattr(calculator, "bias", None)
    return getattr(bias, "relative", None)


def _restore_bias(calculator: ASECalculator, state: dict | None) -> None:
    """Put ``state`` into the calculator's relative-bias window (nothing without one)."""
    from uq_bias.bias import RelativeStrength

    relative = relative_strength(calculator)
    if state is None or relative is None:
        return
    calculator.bias.relative = RelativeStrength.from_state(
        state, relative.tau_rel, relative.window, relative.tau_rel_stress
    )


def _rng(spec: WalkerSpec) -> np.random.Generator:
    """The walker's random stream: seed sequence (seed, index), then (seed, index, segment)."""
    entropy = [spec.config.seed, spec.index] + ([spec.segment] if spec.segment else [])
    return np.random.default_rng(entropy)


def check_npt_cell(atoms: Atoms, name: str) -> None:
    """Raise ValueError unless ``atoms`` (called ``name`` in the message) has a cell periodic in
    all three directions with a volume > 0, as NPT needs."""
    if not atoms.pbc.all():
        why = ""
        if atoms.cell.rank == 3 and not atoms.pbc.any():
            why = (
                ' although it has a cell (Atoms(cell=...) without pbc=True, or pbc="F F F" in '
                "an extended XYZ file, makes a structure non-periodic)"
            )
        raise ValueError(
            f"NPT needs periodic cells (in all three directions), but {name} has pbc="
            f"{atoms.pbc.tolist()}{why}; use ensemble='nvt' for molecules and slabs"
        )
    volume = abs(np.linalg.det(atoms.cell.array))
    if not (np.isfinite(atoms.cell.array).all() and volume > 1e-6):
        raise ValueError(
            f"NPT needs a cell of three independent vectors, but {name} has cell "
            f"{atoms.cell.array.tolist()} (volume {volume:.3g} A^3)"
        )


def make_dynamics(atoms: Atoms, config: ExploreConfig, rng: np.random.Generator):
    """The ASE integrator for ``config`` (see the module docstring)."""
    dt = config.timestep * units.fs
    if config.ensemble == "nvt":
        from ase.md.langevin import Langevin

        friction = config.friction / units.fs
        return Langevin(
            atoms, dt, temperature_K=config.temperature, friction=friction, fixcm=False, rng=rng
        )
    check_npt_cell(atoms, "this structure")
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT

    npt = MTKNPT if config.npt_cell == "full" else IsotropicMTKNPT
    return npt(
        atoms,
        dt,
        temperature_K=config.temperature,
        pressure_au=config.pressure * units.GPa,
        tdamp=config.tdamp * units.fs,
        pdamp=config.pdamp * units.fs,
    )


KEPT_RESULTS = (keys.PER_ATOM | keys.PER_STRUCTURE) - set(keys.ASE_PROPERTIES)


def snapshot(atoms: Atoms, results: dict, index: int, step: int) -> Atoms:
    """A copy of ``atoms`` with the calculator's extra results in info/arrays (no calculator),
    tagged with ``walker`` and ``step``. ASE's own names (energy, forces, stress) are stored as
    ``model_energy``, ``model_forces``, ``model_stress`` so that a reader never takes them for
    reference labels."""
    frame = atoms.copy()
    frame.calc = None
    renamed = {name: f"model_{name}" for name in (keys.ENERGY, keys.FORCES, keys.STRESS)}
    for name, value in results.items():
        if name in KEPT_RESULTS or name in renamed:
            target = frame.arrays if name in keys.PER_ATOM else frame.info
            target[renamed.get(name, name)] = np.array(value) if np.ndim(value) else value
    frame.info["walker"] = index
    frame.info["step"] = step
    return frame


class _Writer:
    """Appends frames to an extended-XYZ file as they come (flushed after each frame)."""

    def __init__(self, path: Path | None, append: bool = False):
        self.path = path
        self.handle = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a fresh trajectory per walker; a restarted segment goes on in its walker's file
            self.handle = open(path, "a" if append else "w")  # noqa: SIM115

    def write(self, frame: Atoms) -> None:
        if self.handle is not None:
            from ase.io import write

            write(self.handle, frame, format="extxyz")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _progress(spec: WalkerSpec):
    from tqdm.auto import tqdm

    return tqdm(
        total=spec.config.steps - spec.first_step,
        desc=f"walker {spec.index}" + (f" (restart {spec.segment})" if spec.segment else ""),
        disable=not spec.config.progress,
        leave=True,
        unit="step",
    )


def run_walker(spec: WalkerSpec) -> WalkerResult:
    """Run one walker to its stop (see :class:`WalkerResult`), starting it again after a
    blow-up while ``config.restarts`` allows (:func:`restarted`)."""
    result = _run_segment(spec)
    while (next_spec := restarted(spec, result)) is not None:
        result = joined(result, _run_segment(next_spec))
    return result


def _run_segment(spec: WalkerSpec) -> WalkerResult:
    """One segment of a walker: fresh calculator, velocities and watchdog, up to its stop."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    config = spec.config
    atoms = spec.start.copy()
    atoms.calc = spec.calculator()
    bias = getattr(atoms.calc, "bias", None)
    if bias is not None and hasattr(bias, "set_temperature"):  # a fade in units of k_B T
        bias.set_temperature(config.temperature)
    _restore_bias(atoms.calc, spec.bias_state)
    rng = _rng(spec)
    if config.temperature > 0:
        thermalize_momenta(atoms, config.temperature, rng=rng)
        Stationary(atoms)
    dynamics = make_dynamics(atoms, config, rng)
    watchdog = Watchdog(config.watchdog, config.temperature, npt_pressure(config))
    writer = _Writer(spec.trajectory, append=spec.segment > 0)
    result = WalkerResult(spec.index, [], "completed", config.steps, trajectory=spec.trajectory)
    try:
        with _progress(spec) as bar:
            _loop(spec, atoms, dynamics, watchdog, writer, result, bar)
            bar.set_postfix_str(f"{result.stop_reason}, max u_i {result.max_uncertainty:.3g}")
    finally:
        writer.close()
    relative = relative_strength(atoms.calc)
    result.bias_state = None if relative is None else relative.state()
    return result


def _loop(spec, atoms, dynamics, watchdog, writer, result: WalkerResult, bar) -> None:
    steps = dynamics.irun(spec.config.steps - spec.first_step)
    step = 0
    while True:
        try:
            next(steps)
        except StopIteration:
            return
        except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError) as err:
            broken = not np.isfinite(atoms.positions).all()  # the step itself blew up
            text = f"{type(err).__name__} from the calculator: {err}"
            verdict = Verdict("non_finite" if broken else "error", text)
            _stop(result, verdict, spec.first_step + step + 1)
            return
        step = dynamics.nsteps
        verdict = observe(spec, atoms, atoms.calc.results, step, watchdog, writer, result)
        if step:
            bar.update(1)
        if verdict.reason is not None:
            return


def observe(
    spec: WalkerSpec,
    atoms: Atoms,
    results: dict,
    step: int,
    watchdog: Watchdog,
    writer: _Writer,
    result: WalkerResult,
) -> Verdict:
    """After MD step ``step`` of walker ``spec.index``'s segment: the watchdog's verdict on
    ``atoms`` and its ``results``, the running maxima, a candidate frame kept (in
    ``result.frames`` and the trajectory; every ``sample_every`` steps, or the frame that
    tripped an uncertainty check) and the stop. Frames and stops count steps from the walker's
    first segment (``spec.first_step + step``)."""
    verdict = watchdog(atoms, results)
    result.max_uncertainty = float(np.fmax(result.max_uncertainty, verdict.max_uncertainty))
    energy_u = results.get(keys.ENERGY_UNCERTAINTY, float("nan"))
    result.max_energy_uncertainty = float(np.fmax(result.max_energy_uncertainty, energy_u))
    every = spec.config.sample_every
    if verdict.reason in FOUND or (verdict.reason is None and step and step % every == 0):
        result.frames.append(snapshot(atoms, results, spec.index, spec.first_step + step))
        writer.write(result.frames[-1])
    if verdict.reason is not None:
        _stop(result, verdict, spec.first_step + step)
    return verdict


def _stop(result: WalkerResult, verdict: Verdict, step: int) -> None:
    result.stop_reason = verdict.reason
    result.message = verdict.message
    result.stop_step = step
