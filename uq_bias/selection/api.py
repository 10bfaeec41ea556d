"""``select``: choose k pool frames with an uncertainty model (or a precomputed feature matrix).

The uncertainty model provides ``graph(frames)`` and ``selection_features(graph) -> (n, D)``
features G whose Gram matrix G G^T is the posterior kernel of the frames given the training set
(gradient features sigma L^-1 phi~(x), or an ensemble's (E_k - mean) / sqrt(K - 1)). The pool is
batched ``chunk_size`` frames at a time, so memory stays at one chunk's graph plus the (n, D)
float64 feature matrix.

With ``labelled_frames`` the features are instead the posterior gradient features of the model
(or of every ensemble member) conditioned on those frames
(:class:`uq_bias.uncertainty.conditioned.ConditionedFeatures`): selection then avoids every
labelled frame, not only the training split, and an ensemble's batch is not capped at K - 1
max-det picks by the rank of its energy features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from uq_bias.options import option
from uq_bias.selection.lcmd import lcmd
from uq_bias.selection.maxdet import maxdet
from uq_bias.selection.maxdist import maxdist
from uq_bias.selection.random_pick import random_selection
from uq_bias.selection.result import Selection, as_features, check_k

METHODS: dict[str, Callable[..., Selection]] = {"maxdet": maxdet, "maxdist": maxdist, "lcmd": lcmd}
METHODS_ALL = (*METHODS, "random")


@dataclass(frozen=True)
class SelectionOptions:
    """How :func:`select` picks frames (the number k is the caller's label budget)."""

    method: Literal["maxdet", "maxdist", "lcmd", "random"] = option(
        "maxdet", "Batch selection: greedy max-det (default), max-dist, LCMD or random."
    )
    seed: int = option(0, "Seed of the random method (the others are deterministic).")
    chunk_size: int = option(64, "Frames per graph when computing the pool's features.")
    rtol: float = option(
        1e-10, "Relative variance below which a frame adds nothing new (filled in last)."
    )


def pool_features(uncertainty_model, frames: Sequence, chunk_size: int = 64) -> torch.Tensor:
    """(n_frames, D) float64 selection features of ``frames``, computed ``chunk_size`` at a time."""
    for name in ("graph", "selection_features"):
        if not callable(getattr(uncertainty_model, name, None)):
            raise TypeError(
                f"the uncertainty model ({type(uncertainty_model).__name__}) has no {name}() "
                "method; pass an uq_bias uncertainty model, or precomputed features=..."
            )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    frames = list(frames)
    out: torch.Tensor | None = None
    for start in range(0, len(frames), chunk_size):
        chunk = frames[start : start + chunk_size]
        feats = uncertainty_model.selection_features(uncertainty_model.graph(chunk)).detach()
        if feats.ndim != 2 or feats.shape[0] != len(chunk):
            raise ValueError(
                f"selection_features returned shape {tuple(feats.shape)} for {len(chunk)} frames; "
                "expected (n_structures, D)"
            )
        if out is None:
            out = feats.new_empty((len(frames), feats.shape[1]), dtype=torch.float64)
        out[start : start + len(chunk)] = feats
    if out is None:
        return torch.zeros((0, 0), dtype=torch.float64)
    return out


def select(
    uncertainty_model=None,
    pool_frames: Sequence | None = None,
    k: int | None = None,
    method: str = SelectionOptions.method,
    *,
    features=None,
    train_features=None,
    labelled_frames: Sequence | None = None,
    seed: int = SelectionOptions.seed,
    chunk_size: int = SelectionOptions.chunk_size,
    rtol: float = SelectionOptions.rtol,
) -> Selection:
    """Pick ``k`` frames of ``pool_frames`` worth labelling: the label budget of this call.

    Args:
        uncertainty_model: provides ``graph`` and ``selection_features`` (posterior features).
        pool_frames: candidate ``ase.Atoms``; optional when ``features`` is given.
        k: how many frames to pick; min(k, n_pool) indices come back.
        method: "maxdet" (greedy max-det, default), "maxdist", "lcmd" or "random".
        features: precomputed (n_pool, D) posterior features instead of a model.
        train_features: optional (m, D) features of labelled frames, conditioned on (maxdet)
            or used as extra centres (maxdist, lcmd); not needed with posterior features.
        labelled_frames: every frame labelled so far (any role): condition the features on
            them (see the module doc); needs ``uncertainty_model``, not ``features``.
        seed: seed of the ``random`` method (the others are deterministic without it).
        chunk_size: frames per graph when computing features.
        rtol: relative variance below which a frame adds nothing new (see ``result``).

    Returns:
        Selection(indices, scores, method, n_filled), best first.
    """
    if method not in METHODS_ALL:
        raise ValueError(f"unknown selection method {method!r}; choose one of {list(METHODS_ALL)}")
    if k is None:
        raise TypeError("select: k (the number of frames to pick) is required")
    k = check_k(k)
    if features is not None:
        if labelled_frames is not None:
            raise TypeError(
                "select: labelled_frames conditions an uncertainty model's features; with "
                "precomputed features=... condition them yourself (or pass train_features)"
            )
        features = as_features(features)
        if pool_frames is not None and len(pool_frames) != features.shape[0]:
            raise ValueError(
                f"features has {features.shape[0]} rows but pool_frames has {len(pool_frames)} "
                "frames; give one feature row per pool frame"
            )
        n = features.shape[0]
    elif uncertainty_model is None:
        raise TypeError("select: give an uncertainty_model with pool_frames, or features=...")
    elif pool_frames is None:
        raise TypeError("select: pool_frames is required when features are not given")
    else:
        n = len(pool_frames)
    if method == "random":
        return random_selection(n, k, seed=seed)
    if features is None:
        if n == 0 or k == 0:
            return Selection([], [], method)
        if labelled_frames is not None:
            from uq_bias.uncertainty.conditioned import ConditionedFeatures

            uncertainty_model = ConditionedFeatures(uncertainty_model, labelled_frames)
        features = pool_features(uncertainty_model, pool_frames, chunk_size)
    return METHODS[method](features, k, train_features=train_features, rtol=rtol)
