"""Exploration: uncertainty-biased molecular dynamics with a watchdog, keeping candidates.

``explore(calculator, starts, config)`` runs ``walkers`` independent walkers and returns an
:class:`ExploreResult`. With ``engine="ase"`` (default) each walker is a picklable
:class:`WalkerSpec` run by :func:`run_walker` (ASE integrators, one walker after another, so
executors can run them elsewhere); with ``engine="batched"`` all walkers advance together, one
graph and one model call per MD step (:func:`run_batched`: Langevin NVT, and NPT by
stochastic cell rescaling, :mod:`uq_bias.dynamics.barostat`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator as ASECalculator
from torch.nn import Module

from uq_bias.dynamics.batched import run_batched
from uq_bias.dynamics.walker import (
    ExploreConfig,
    WalkerResult,
    WalkerSpec,
    check_npt_cell,
    run_walker,
)
from uq_bias.dynamics.watchdog import Watchdog, WatchdogConfig

__all__ = [
    "CalculatorRecipe",
    "ExploreConfig",
    "ExploreResult",
    "Watchdog",
    "WatchdogConfig",
    "WalkerResult",
    "WalkerSpec",
    "explore",
    "run_batched",
    "run_walker",
    "trajectory_paths",
    "walker_specs",
]


@dataclass(frozen=True)
class CalculatorRecipe:
    """A picklable recipe for a :class:`uq_bias.Calculator` on a saved uncertainty model.

    Attributes:
        path: directory written by ``uq_bias.uncertainty.save`` (read with ``load``).
        bias: the bias, or None for unbiased MD.
        options: extra keyword arguments for ``uq_bias.uncertainty.load``.
        device: "auto", "cpu", "cuda" or "cuda:<k>", resolved in the process that builds the
            calculator (each worker its own); None: where ``load`` puts it (the CPU).
    """

    path: str
    bias: object | None = None
    options: dict = field(default_factory=dict)
    device: str | None = None

    def load_model(self):
        """The uncertainty model, on ``device``."""
        from uq_bias.uncertainty import load

        return load(self.path, **self.options, device=self.device)

    def __call__(self) -> ASECalculator:
        from uq_bias.calculator import Calculator

        return Calculator(self.load_model(), bias=self.bias)


@dataclass
class ExploreResult:
    """The walkers' results, in walker order."""

    walkers: list[WalkerResult]

    @property
    def frames(self) -> list[Atoms]:
        """All kept candidate frames, walker by walker."""
        return [frame for walker in self.walkers for frame in walker.frames]

    @property
    def stop_reasons(self) -> list[str]:
        return [walker.stop_reason for walker in self.walkers]


def _fresh_factory(calculator) -> Callable[[], ASECalculator]:
    """A factory from a calculator instance: a uq_bias Calculator is rebuilt (sharing the model,
    with its own bias state) for each walker; other ASE calculators are reused as they are."""
    from uq_bias.calculator import Calculator

    if isinstance(calculator, Calculator):
        bias = calculator.bias.config if calculator.bias is not None else None
        return _Rebuild(calculator.model, bias)
    if isinstance(calculator, ASECalculator):
        return _Same(calculator)
    if callable(calculator):
        return calculator
    raise TypeError(
        f"explore: expected an ASE calculator or a zero-argument factory returning one, got "
        f"{type(calculator).__name__}"
    )


@dataclass(frozen=True)
class _Same:
    """A factory handing out one (non-uq_bias) ASE calculator as it is."""

    calculator: ASECalculator

    def __call__(self) -> ASECalculator:
        return self.calculator


@dataclass(frozen=True)
class _Rebuild:
    model: object
    bias: object | None

    def __call__(self) -> ASECalculator:
        from uq_bias.calculator import Calculator

        return Calculator(self.model, bias=self.bias)


def _check_elements(calculator, frames: Sequence[Atoms]) -> None:
    """Every start structure holds only elements the model of a uq_bias Calculator knows (before
    any walker opens its trajectory; a walker stops on a calculator error instead)."""
    from uq_bias.training.labels import check_elements

    known = getattr(getattr(calculator, "model", None), "atomic_numbers", None)
    if known is None:
        return
    for k, atoms in enumerate(frames):
        check_elements([atoms], known, f"explore: start structure {k}", "the model")


def _trajectory_path(trajectory: str | Path | None, index: int, n: int) -> Path | None:
    if trajectory is None:
        return None
    path = Path(trajectory)
    return path if n == 1 else path.with_name(f"{path.stem}_w{index}{path.suffix}")


def trajectory_paths(trajectory: str | Path, walkers: int) -> list[Path]:
    """The file each of ``walkers`` walkers writes: ``trajectory`` for one walker,
    ``<stem>_w<k><suffix>`` for several (see :func:`walker_specs`)."""
    return [_trajectory_path(trajectory, k, walkers) for k in range(walkers)]


def walker_specs(
    calculator,
    starts: Atoms | Sequence[Atoms],
    config: ExploreConfig,
    *,
    walkers: int = 1,
    trajectory: str | Path | None = None,
    bias_states: Sequence[dict | None] | None = None,
) -> list[WalkerSpec]:
    """The :class:`WalkerSpec` of each walker; walker k starts from ``starts[k % len(starts)]``
    and writes to ``trajectory`` (one walker) or ``<stem>_w<k><suffix>`` (several).
    ``bias_states``: one relative-bias window per walker (see ``WalkerSpec.bias_state``)."""
    frames = [starts] if isinstance(starts, Atoms) else list(starts)
    if not frames or not all(isinstance(a, Atoms) for a in frames):
        raise ValueError("explore: starts must be an ase.Atoms or a non-empty list of them")
    if not (isinstance(walkers, int) and walkers >= 1):
        raise ValueError(f"explore: walkers must be an integer >= 1, got {walkers!r}")
    if config.ensemble == "npt":
        for k, atoms in enumerate(frames):
            check_npt_cell(atoms, f"explore: start {k}")
    _check_elements(calculator, frames)
    if bias_states is not None and len(bias_states) != walkers:
        raise ValueError(
            f"explore: bias_states has {len(bias_states)} entries for {walkers} walkers; give "
            "one per walker (None for a walker without a saved window)"
        )
    factory = _fresh_factory(calculator)
    return [
        WalkerSpec(
            index=k,
            start=frames[k % len(frames)],
            calculator=factory,
            config=config,
            trajectory=_trajectory_path(trajectory, k, walkers),
            bias_state=None if bias_states is None else bias_states[k],
        )
        for k in range(walkers)
    ]


def explore(
    calculator,
    starts: Atoms | Sequence[Atoms],
    config: ExploreConfig | None = None,
    *,
    walkers: int = 1,
    trajectory: str | Path | None = None,
    bias_states: Sequence[dict | None] | None = None,
    **overrides,
) -> ExploreResult:
    """Run exploration MD from ``starts`` with ``walkers`` independent walkers.

    Args:
        calculator: a :class:`uq_bias.Calculator` (rebuilt per walker, so the relative-bias
            state is per walker), another ASE calculator, or a zero-argument factory (such as a
            :class:`CalculatorRecipe`).
        starts: one structure or a list; walker k starts from ``starts[k % len(starts)]``.
        config: an :class:`ExploreConfig`; keyword ``overrides`` replace its fields
            (e.g. ``steps=200, ensemble="npt"``, ``engine="batched", device="cuda"``).
        walkers: number of walkers.
        trajectory: extended-XYZ output for the kept frames (see :func:`walker_specs`).
        bias_states: one relative-bias window per walker to start from (a
            ``RelativeStrength.state()`` dict, e.g. ``ExploreResult.walkers[k].bias_state`` of
            an earlier run), or None; see :class:`WalkerSpec`.
    """
    config = config or ExploreConfig()
    if overrides:
        unknown = sorted(set(overrides) - set(ExploreConfig.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"explore: unknown option(s) {unknown}; valid: "
                f"{sorted(ExploreConfig.__dataclass_fields__)}"
            )
        config = replace(config, **overrides)
    if config.device is not None and isinstance(getattr(calculator, "model", None), Module):
        from uq_bias.device import resolve_device

        calculator.model.to(resolve_device(config.device))  # a uq_bias Calculator's model
    specs = walker_specs(
        calculator, starts, config, walkers=walkers, trajectory=trajectory, bias_states=bias_states
    )
    if config.engine == "batched":
        return ExploreResult(run_batched(*_model_and_bias(calculator), specs))
    return ExploreResult([run_walker(spec) for spec in specs])


def _model_and_bias(calculator):
    """The model and bias config the batched engine needs, from a uq_bias Calculator or a
    recipe with ``load_model()``."""
    from uq_bias.calculator import Calculator

    if isinstance(calculator, Calculator):
        return calculator.model, None if calculator.bias is None else calculator.bias.config
    if callable(getattr(calculator, "load_model", None)):
        return calculator.load_model(), calculator.bias
    raise TypeError(
        f"explore(engine='batched') needs a uq_bias.Calculator or a CalculatorRecipe (it calls "
        f"the model itself), got {type(calculator).__name__}; other ASE calculators run with "
        "engine='ase'"
    )
