"""The outcome of a batch selection, input checks shared by the methods, and the fill-up rule.

Fill-up rule (all methods): a greedy method stops choosing once every remaining frame is
"exhausted", i.e. adds (numerically) nothing new: its residual posterior variance (max-det) or its
squared distance to the chosen set (max-dist, LCMD) is at most ``rtol`` times its own prior
variance k(x, x). That happens for duplicates of chosen frames and once the rank of the features
is used up. If ``k`` asks for more frames, the rest are appended in order of decreasing prior
variance k(x, x) (the posterior uncertainty of the frame), ties broken by the lower pool index,
with score 0. ``Selection.n_filled`` says how many trailing frames came from this rule. Max-det
also stops once its best gain is at most ``rtol`` times its first pick's (numerically zero).
The campaign and ``uq-bias select`` never label or write the filled-up frames: they say how many
were picked of how many asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class Selection:
    """Frames chosen from a pool, best first.

    Attributes:
        indices: pool indices of the chosen frames, in the order they were picked.
        scores: one per index: for ``maxdet`` the residual posterior variance of the frame given
            the training set and the frames picked before it (eV^2 for energy features); for
            ``maxdist`` and ``lcmd`` the squared kernel distance to the nearest centre at pick
            time (eV^2); NaN for ``random``; 0 for filled-up frames.
        method: the selection method used.
        n_filled: how many trailing indices were appended by the fill-up rule (see module doc).
    """

    indices: list[int]
    scores: list[float] = field(default_factory=list)
    method: str = "maxdet"
    n_filled: int = 0

    def __len__(self) -> int:
        return len(self.indices)


def as_features(features, name: str = "features", width: int | None = None) -> torch.Tensor:
    """A float64 (n, D) tensor from a tensor or array; raise ValueError if not 2-D and finite."""
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(features)}")
    if features.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D (n_structures, D) matrix, got shape {tuple(features.shape)}"
        )
    if width is not None and features.shape[1] != width:
        raise ValueError(
            f"{name}: has {features.shape[1]} columns but the pool features have {width}; "
            "both must come from the same feature map"
        )
    features = features.detach().to(torch.float64)
    if not torch.isfinite(features.sum()) and not torch.isfinite(features).all():
        bad = (~torch.isfinite(features)).any(dim=1).nonzero().flatten()[:10].tolist()
        raise ValueError(f"{name}: non-finite (NaN or inf) values in row(s) {bad}")
    return features


def kernel_diag(features: torch.Tensor) -> torch.Tensor:
    """(n,) squared row norms ||g_x||^2 = k(x, x); raise ValueError if they overflow."""
    norms = torch.einsum("ij,ij->i", features, features)
    if not torch.isfinite(norms).all():
        raise ValueError(
            "features: squared row norms overflow float64; rescale the features (only their "
            "relative size matters for selection)"
        )
    return norms


def check_k(k) -> int:
    """``k`` as a non-negative int; raise ValueError otherwise."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer number of frames to select, got {k!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0 (the number of frames to select), got {k}")
    return int(k)


def check_rtol(rtol: float) -> float:
    if not (isinstance(rtol, (int, float)) and 0 <= rtol < 1 and math.isfinite(rtol)):
        raise ValueError(f"rtol must be a number in [0, 1), got {rtol!r}")
    return float(rtol)


def fill_up(
    picked: list[int], scores: list[float], prior: torch.Tensor, k: int, method: str
) -> Selection:
    """Complete ``picked`` to min(k, n) frames with the fill-up rule (see module doc).

    ``prior`` is (n,) k(x, x) for every pool frame.
    """
    n = int(prior.shape[0])
    missing = min(k, n) - len(picked)
    if missing <= 0:
        return Selection(list(picked), list(scores), method, 0)
    taken = torch.zeros(n, dtype=torch.bool, device=prior.device)
    if picked:
        taken[torch.as_tensor(picked, device=prior.device)] = True
    rest = (~taken).nonzero().flatten()
    order = torch.sort(-prior[rest], stable=True).indices  # stable: ties keep the lower index
    extra = rest[order[:missing]].tolist()
    return Selection(list(picked) + extra, list(scores) + [0.0] * len(extra), method, len(extra))
