"""Every iteration's model of a campaign, scored on the held-out test subsets.

Model k (``iterations/NNN/uncertainty``) gets, per :class:`harness.case.Subset`, the error
metrics of :func:`uq_bias.campaign.uq.error_metrics` (energy RMSE per atom, force RMSE, atom
coverage, ...) and, where every frame of the subset is periodic and carries a reference stress,

    stress_rmse = sqrt( mean_{S, 3x3} (sigma - sigma_ref)^2 )                    eV/A^3

(the model's stress is (1/V) dE/d(strain), ASE's sign). Scores are cached in the campaign
folder (``test_metrics.json``, tied to the test set's file name), so a model is scored once:
during the campaign, for its progress line, and never again when the table is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from harness.case import Subset

CACHE = "test_metrics.json"


def has_stress(frames: Sequence[Atoms]) -> bool:
    """Whether every frame is periodic in three directions and labelled with a stress."""
    return bool(frames) and all(
        a.pbc.all() and a.calc is not None and "stress" in a.calc.results for a in frames
    )


def stress_rmse(predicted: np.ndarray, reference: np.ndarray) -> float:
    """The module docstring's stress RMSE of (S, 3, 3) stresses, eV/A^3."""
    predicted, reference = np.asarray(predicted), np.asarray(reference)
    if predicted.shape != reference.shape or predicted.shape[-2:] != (3, 3):
        raise ValueError(
            f"stress_rmse: need two (S, 3, 3) arrays of one shape, got {predicted.shape} and "
            f"{reference.shape}"
        )
    return float(np.sqrt(np.mean((predicted - reference) ** 2)))


def predicted_stress(model, frames: Sequence[Atoms], chunk: int = 16) -> np.ndarray:
    """(S, 3, 3) stresses of ``model`` (an uncertainty model) on ``frames``, eV/A^3."""
    parts = []
    for start in range(0, len(frames), chunk):
        out = model(model.graph(list(frames[start : start + chunk])), stress=True)
        parts.append(out.stress.detach().cpu().double().numpy())
    return np.concatenate(parts)


def score(model, frames: Sequence[Atoms]) -> dict[str, float]:
    """Error metrics of ``model`` on labelled ``frames`` (the module docstring)."""
    from uq_bias.campaign import uq

    metrics = uq.error_metrics(uq.predict(model, frames))
    if has_stress(frames):
        reference = np.stack([a.get_stress(voigt=False) for a in frames])
        metrics["stress_rmse"] = stress_rmse(predicted_stress(model, frames), reference)
    return metrics


def score_iterations(
    folder: Path, frames: Sequence[Atoms], test_path: Path, subsets: Sequence[Subset]
) -> tuple[dict[int, dict], list[int]]:
    """({k: {subset: metrics}} of every model in the campaign ``folder``, the iterations scored
    by this call); the scores are cached in ``folder / test_metrics.json``."""
    from uq_bias.campaign import uq
    from uq_bias.campaign.state import read_json, write_json

    cache = Path(folder) / CACHE
    done = read_json(cache, {})
    if done.get("test_set") != Path(test_path).name:
        done = {"test_set": Path(test_path).name, "iterations": {}}
    parts = {s.name: s.of(frames) for s in subsets}
    new = []
    for path in sorted((Path(folder) / "iterations").glob("*/uncertainty")):
        k = str(int(path.parent.name))
        if k not in done["iterations"]:
            model = uq.load(path)
            done["iterations"][k] = {name: score(model, part) for name, part in parts.items()}
            new.append(int(k))
    if new:
        write_json(cache, done)
    return {int(k): v for k, v in done["iterations"].items()}, new


def progress_text(scores: dict[str, dict]) -> str:
    """``test F RMSE rama 0.210, md 0.250 eV/A`` of one model's scores."""
    listed = ", ".join(f"{name} {m['forces_rmse']:.3f}" for name, m in scores.items())
    return f"test F RMSE {listed} eV/A"
