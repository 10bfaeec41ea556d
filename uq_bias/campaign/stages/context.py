"""What every stage of a campaign iteration needs: the folder, the config, the executor, the start
structures, and the paths and readers the stages share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms

from uq_bias.campaign import config as cfg
from uq_bias.campaign import uq as unc
from uq_bias.campaign.roles import Roles, read_test, split_roles
from uq_bias.campaign.state import CampaignState, read_json
from uq_bias.campaign.systems import read_structures


@dataclass
class Context:
    """What every stage needs: the folder, the config, the (lazy) executor, the start
    structures, and where progress lines go."""

    state: CampaignState
    config: cfg.CampaignConfig
    executor: object  # loop.LazyExecutor: .get() -> Executor
    structures: list[Atoms]
    say: Callable[[str], None] = print
    bars: bool = False

    def dir(self, k: int) -> Path:
        return self.state.iteration_dir(k)


def start_structures(config: cfg.CampaignConfig) -> list[Atoms]:
    """The start structures named by ``data.structures``."""
    spec = config.data.structures
    return read_structures(spec, None if spec.startswith("builtin:") else config.path(spec))


def data_roles(ctx: Context) -> Roles:
    """The labelled frames by role (training, validation, calibration): see
    :mod:`uq_bias.campaign.roles`."""
    d = ctx.config.data
    return split_roles(
        ctx.state.labelled(), d.valid_fraction, d.calibration_fraction, ctx.config.seed
    )


def test_frames(ctx: Context) -> list[Atoms]:
    """The labelled test frames of ``data.test`` (empty without one)."""
    test = ctx.config.data.test
    return read_test(ctx.config.path(test)) if test else []


def model_paths(ctx: Context, k: int) -> list[Path]:
    folder = ctx.dir(k) / "model"
    return [folder / f"member_{j}.model" for j in range(ctx.config.model.ensemble)]


def uncertainty_dir(ctx: Context, k: int) -> Path:
    return ctx.dir(k) / "uncertainty"


def load_uncertainty(ctx: Context, k: int):
    return unc.load(uncertainty_dir(ctx, k), device=ctx.config.device)


def read_metrics(state: CampaignState, k: int) -> dict:
    return read_json(state.iteration_dir(k) / "metrics.json", {})


def map_resumable(
    ctx: Context,
    fn: Callable,
    items: Sequence,
    done: Callable[[int], bool],
    save: Callable[[int, object], None],
) -> None:
    """Run ``fn`` over the items not ``done`` yet, saving each result as soon as it comes."""
    todo = [i for i in range(len(items)) if not done(i)]
    if not todo:
        return
    executor = ctx.executor.get() if len(todo) > 1 else None
    if executor is None:
        for i in todo:
            save(i, fn(items[i]))
        return
    for j, result in executor.imap(fn, [items[i] for i in todo]):
        save(todo[j], result)
