"""The selection stage: a batch of the candidates to label, conditioned on every labelled frame."""

from __future__ import annotations

from dataclasses import asdict, replace

from uq_bias import keys
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
    longer be judged by data it never used. A biased campaign chooses among the candidates in
    the thermal band (:func:`thermal_band`); ``selection.json`` says how many were."""
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
    indices, scores, n_filled, band = [], [], 0, None
    if pool and n > 0:
        options = replace(narrow(config.selection, SelectionOptions), seed=config.seed + k)
        model = load_uncertainty(ctx, k)
        band = thermal_band(ctx, model, pool, n)
        among = band["pool"] if band else list(range(len(pool)))
        chosen = select_batch(
            model, [pool[i] for i in among], n, labelled_frames=labelled, **asdict(options)
        )
        n_filled = int(chosen.n_filled)  # frames that add nothing new: not labelled
        indices = [among[int(i)] for i in chosen.indices[: len(chosen.indices) - n_filled]]
        scores = [float(s) for s in chosen.scores[: len(indices)]]
        if band:
            ctx.state.log(
                f"iteration {k}: thermal band: {band['n_in_band']} of {len(pool)} candidates "
                f"within {band['limits']} eV/atom of their start structure's energy"
            )
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
            "thermal_band": band and {key: band[key] for key in ("n_in_band", "limits")},
        },
    )


def thermal_band(ctx: Context, model, pool: list, n: int) -> dict | None:
    """The pool restricted to the thermal band (:mod:`uq_bias.selection.thermal`) of its biased
    walkers: {"pool": indices into ``pool``, "n_in_band", "limits": the distinct upper ends,
    eV/atom}. None when the band is off, the walkers are plain MD (tau 0), or a candidate lacks
    its unbiased energy (``bias.split: false``; logged).

    dE of a candidate of walker i is its unbiased energy per atom (iteration k's model, as the
    walker had it) minus that model's energy per atom of start structure i mod S; the limit is
    the harmonic mean plus ``thermal_band`` standard deviations at walker i's temperature."""
    import torch

    from uq_bias.selection.thermal import band_limit, band_pool, in_band

    config = ctx.config
    width, e = config.selection.thermal_band, config.exploration
    if width is None or e.bias.tau == 0 or e.bias.tau_rel == 0:
        return None
    if any(keys.UNBIASED_ENERGY not in a.info for a in pool):
        ctx.state.log("thermal band off: candidates carry no unbiased energy (bias.split false)")
        return None
    starts = ctx.structures
    energies = model(model.graph(starts)).energy.detach().double().cpu().tolist()
    reference = [e_s / len(a) for e_s, a in zip(energies, starts)]  # eV/atom
    rise, limit = [], []
    for a in pool:
        walker = int(a.info.get("walker", 0))
        rise.append(float(a.info[keys.UNBIASED_ENERGY]) / len(a) - reference[walker % len(starts)])
        temperature = e.walker_conditions(walker)[0]
        limit.append(band_limit(len(a), temperature, width, periodic=bool(a.pbc.any())))
    rise, limit = torch.tensor(rise), torch.tensor(limit)
    among = band_pool(rise, limit, n)
    return {
        "pool": [int(i) for i in among],
        "n_in_band": int(in_band(rise, limit).sum()),
        "limits": sorted({round(float(x), 4) for x in limit}),
    }
