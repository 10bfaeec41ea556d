"""The training stage: the model or ensemble trained (or fine-tuned) with Lightning on the
training split, early-stopped on the validation split."""

from __future__ import annotations

from dataclasses import replace

from uq_bias.campaign.stages.context import Context, data_roles, model_paths
from uq_bias.campaign.state import FRAME_ID, write_json


def train(ctx: Context, k: int) -> None:
    """Train (or fine-tune) the model or ensemble with Lightning on the training split."""
    from uq_bias.training import compute_statistics
    from uq_bias.training.train import quiet_lightning

    config = ctx.config
    roles = data_roles(ctx)
    train_frames, valid_frames = roles.train, roles.valid
    if not train_frames or not valid_frames or not roles.calibration:
        n = len(train_frames) + len(valid_frames) + len(roles.calibration)
        raise ValueError(
            f"iteration {k}: need a labelled frame for training, validation and calibration "
            f"each, have {n} frames in all; raise data.initial_frames"
        )
    write_json(
        ctx.dir(k) / "roles.json",
        {
            name: [a.info[FRAME_ID] for a in getattr(roles, name)]
            for name in ("train", "valid", "calibration")
        },
    )
    options = replace(config.training, seed=config.seed + 1000 * k)
    trainer = replace(config.trainer, progress_bar=ctx.bars)
    previous = model_paths(ctx, k - 1) if (config.model.fine_tune and k > 1) else None
    fresh = previous is None and config.model.file is None
    stats = compute_statistics(train_frames, config.model.cutoff) if fresh else None
    with quiet_lightning():
        _train_members(ctx, k, train_frames, valid_frames, options, trainer, previous, stats)


def _train_members(ctx, k, train_frames, valid_frames, options, trainer, previous, stats):
    """Train each member (one for a single model) with seed ``options.seed + j``; members
    already written (before a kill) are kept."""
    from uq_bias.training import train as train_model

    config = ctx.config
    for j, out in enumerate(model_paths(ctx, k)):
        if out.is_file():  # a member finished before a kill (model files are written atomically)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        init = (
            previous[j]
            if previous
            else (config.path(config.model.file) if config.model.file else None)
        )
        train_model(
            train_frames,
            valid_frames,
            out,
            init=init,
            preset=config.model.preset,
            cutoff=config.model.cutoff,
            dtype=config.model.dtype,
            statistics=stats,
            options=replace(options, seed=options.seed + j),
            trainer_options=trainer,
            log=out.with_name(f"member_{j}_metrics.csv"),
        )
