"""The selection stage: a batch of the candidates to label, conditioned on every labelled frame."""

from __future__ import annotations

from dataclasses import asdict, replace

from uq_bias.campaign.stages.context import Context, load_uncertainty
from uq_bias.campaign.state import FRAME_ID, read_frames, write_frames, write_json
from uq_bias.options import narrow


def select(ctx: Context, k: int) -> None:
    """Pick a batch of candidates with the configured method (max-det by default), on posterior
    gradient features conditioned on every labelled frame, whatever its role (training,
    validation, calibration), so that no label is spent next to one already paid for; for an
    ensemble these are its members' features, so a batch is not capped at K - 1 max-det picks
    (:class:`uq_bias.uncertainty.conditioned.ConditionedFeatures`). The test set (``data.test``)
    is left out on purpose: a loop that steers its labels away from the test frames would no
    longer be judged by data it never used."""
    from uq_bias.selection import SelectionOptions
    from uq_bias.selection import select as select_batch

    config = ctx.config
    labelled = ctx.state.labelled()
    known = {a.info[FRAME_ID] for a in labelled}
    pool = [
        a for a in read_frames(ctx.dir(k) / "candidates.extxyz") if a.info[FRAME_ID] not in known
    ]
    n = config.selection.batch_size
    if config.stop.label_budget is not None:
        n = min(n, max(0, config.stop.label_budget - len(known)))
    indices, scores, n_filled = [], [], 0
    if pool and n > 0:
        options = replace(narrow(config.selection, SelectionOptions), seed=config.seed + k)
        model = load_uncertainty(ctx, k)
        chosen = select_batch(model, pool, n, labelled_frames=labelled, **asdict(options))
        n_filled = int(chosen.n_filled)  # frames that add nothing new: not labelled
        indices = [int(i) for i in chosen.indices[: len(chosen.indices) - n_filled]]
        scores = [float(s) for s in chosen.scores[: len(indices)]]
    selected = [pool[i] for i in indices]
    write_frames(ctx.dir(k) / "selected.extxyz", selected)
    write_json(
        ctx.dir(k) / "selection.json",
        {
            "method": config.selection.method,
            "n_candidates": len(pool),
            "n_asked": n,
            "indices": indices,
            "scores": scores,
            "n_filled": n_filled,
            "frame_ids": [a.info[FRAME_ID] for a in selected],
        },
    )
