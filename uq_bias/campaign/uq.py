"""The campaign's use of uncertainty models: fit and calibrate, save and load, predict, score.

Error metrics of a model with uncertainty on labelled frames (S structures, N atoms):

    energy_rmse_per_atom = sqrt( mean_S ((E - E_ref) / n_atoms)^2 )           eV/atom
    forces_rmse          = sqrt( mean_{N, xyz} (F - F_ref)^2 )                  eV/A
    forces_mae           = mean_{N, xyz} |F - F_ref|                            eV/A
    atom_coverage        = share of atoms with |F_i - F_i,ref| <= U_i           1
    energy_coverage      = share of structures with |E - E_ref| <= U(S)         1
    spearman_atom        = Spearman rank correlation of U_i and |F_i - F_i,ref|
    mean_atom_uncertainty, mean_energy_uncertainty_per_atom                    eV/A, eV/atom
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from uq_bias.campaign import config as cfg


@dataclass
class Predictions:
    """Model predictions beside the reference labels of S frames with N atoms in total.

    Attributes:
        energy, energy_ref, energy_uncertainty: (S,) eV.
        n_atoms: (S,) atoms per frame.
        forces, forces_ref: (N, 3) eV/A.
        atom_uncertainty: (N,) eV/A.
        numbers: (N,) atomic numbers.
    """

    energy: np.ndarray
    energy_ref: np.ndarray
    energy_uncertainty: np.ndarray
    n_atoms: np.ndarray
    forces: np.ndarray
    forces_ref: np.ndarray
    atom_uncertainty: np.ndarray
    numbers: np.ndarray


def predict(model, frames: Sequence[Atoms], chunk: int = 16) -> Predictions:
    """Predictions of an uncertainty model on labelled ``frames`` (labels in ``atoms.calc``)."""
    from uq_bias.models import energy_gradients

    parts: dict[str, list] = {name: [] for name in Predictions.__dataclass_fields__}
    for start in range(0, len(frames), chunk):
        batch = list(frames[start : start + chunk])
        graph = model.graph(batch).requires_grad_(positions=True, strain=False)
        with torch.enable_grad():
            out = model(graph, forces=True, stress=False)
            forces = out.forces
            if forces is None:
                forces, _ = energy_gradients(out.energy, graph)

        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()

        parts["energy"].append(np_(out.energy))
        parts["energy_uncertainty"].append(np_(out.energy_uncertainty))
        parts["forces"].append(np_(forces))
        parts["atom_uncertainty"].append(np_(out.atom_uncertainty))
        parts["energy_ref"].append([a.get_potential_energy() for a in batch])
        parts["forces_ref"].append(np.concatenate([a.get_forces() for a in batch]))
        parts["n_atoms"].append([len(a) for a in batch])
        parts["numbers"].append(np.concatenate([a.numbers for a in batch]))
    return Predictions(
        **{k: np.concatenate([np.asarray(v) for v in vs]) for k, vs in parts.items()}
    )


def error_metrics(p: Predictions) -> dict[str, float]:
    """The metrics of the module docstring."""
    from scipy.stats import spearmanr

    de = (p.energy - p.energy_ref) / p.n_atoms
    df = p.forces - p.forces_ref
    atom_error = np.linalg.norm(df, axis=1)
    spearman = float(spearmanr(p.atom_uncertainty, atom_error)[0]) if len(atom_error) > 2 else 0.0
    return {
        "n_frames": int(len(p.energy)),
        "energy_rmse_per_atom": float(np.sqrt(np.mean(de**2))),
        "forces_rmse": float(np.sqrt(np.mean(df**2))),
        "forces_mae": float(np.mean(np.abs(df))),
        "atom_coverage": float(np.mean(atom_error <= p.atom_uncertainty)),
        "energy_coverage": float(np.mean(np.abs(p.energy - p.energy_ref) <= p.energy_uncertainty)),
        "spearman_atom": spearman if np.isfinite(spearman) else 0.0,
        "mean_atom_uncertainty": float(np.mean(p.atom_uncertainty)),
        "mean_energy_uncertainty_per_atom": float(np.mean(p.energy_uncertainty / p.n_atoms)),
    }


def atom_errors(p: Predictions, limit: int = 4000) -> dict[str, list]:
    """Per-atom force errors |F_i - F_i,ref| and uncertainties U_i (eV/A), at most ``limit``
    atoms (evenly spaced), for the calibration plot."""
    error = np.linalg.norm(p.forces - p.forces_ref, axis=1)
    keep = np.linspace(0, len(error) - 1, min(limit, len(error))).astype(int)
    return {
        "atom_error": error[keep].tolist(),
        "atom_uncertainty": p.atom_uncertainty[keep].tolist(),
        "energy_error": np.abs(p.energy - p.energy_ref).tolist(),
        "energy_uncertainty": p.energy_uncertainty.tolist(),
    }


def calibration_factor(residual: np.ndarray, raw: np.ndarray, method: str, alpha: float) -> float:
    """c such that c * raw predicts |residual|.

    conformal:  c = the ceil((n + 1)(1 - alpha))-th smallest of the scores |r| / u (coverage
                1 - alpha for exchangeable data; the largest score when n is too small);
    likelihood: c = sqrt(mean(r^2 / u^2)) (maximises the Gaussian likelihood).
    """
    scores = np.abs(residual) / np.maximum(raw, np.finfo(float).tiny)
    if method == "likelihood":
        return float(np.sqrt(np.mean(scores**2)))
    n = len(scores)
    rank = min(n, int(np.ceil((n + 1) * (1 - alpha))))
    return float(np.sort(scores)[rank - 1])


def fit(
    model_paths: Sequence[str],
    train: Sequence[Atoms],
    valid: Sequence[Atoms],
    config: cfg.CampaignConfig,
):
    """The uncertainty model of ``config.uncertainty`` for the trained model(s): fitted on
    ``train``, calibrated on ``valid``. Returns (model, calibration summary)."""
    u = config.uncertainty
    paths = [str(p) for p in model_paths]
    model = _tag(_build(u.method, paths, _options(u)), u.method, paths, _options(u))
    if u.method != "ensemble":
        model.fit(list(train))
    raw = predict(model, valid)
    c_energy = calibration_factor(
        raw.energy - raw.energy_ref, raw.energy_uncertainty, u.calibration, u.alpha
    )
    atom_error = np.linalg.norm(raw.forces - raw.forces_ref, axis=1)
    c_atom = calibration_factor(atom_error, raw.atom_uncertainty, u.calibration, u.alpha)
    model.calibration.set(c_energy, c_atom)
    summary = {
        "method": u.calibration,
        "alpha": u.alpha,
        "energy_factor": c_energy,
        "atom_factor": c_atom,
        "n_valid_frames": len(valid),
    }
    return model, summary


def _build(method: str, paths: list[str], options: dict):
    """A fresh (unfitted, uncalibrated) uncertainty model around the model file(s)."""
    if method == "ensemble":
        from uq_bias.uncertainty import Ensemble

        return Ensemble(paths)
    from uq_bias.uncertainty import GradientFeatureUncertainty

    return GradientFeatureUncertainty(paths[0], method=method, **options)


def _options(u: cfg.UncertaintyConfig) -> dict:
    if u.method == "ensemble":
        return {}
    sketch = {"features": "sketch", "sketch_dim": u.sketch} if u.sketch else {}
    return {"sigma": u.sigma, **sketch}


def _own_state(model) -> dict[str, torch.Tensor]:
    """The fitted state: every buffer that is not part of the wrapped model file(s)."""
    return {
        name: value
        for name, value in model.state_dict().items()
        if not name.startswith(("model.", "members."))
    }


def save(model, path: str | Path) -> None:
    """Save a fitted uncertainty model to the folder ``path``: ``bundle.json`` (method, model
    files relative to the folder, options) and ``state.pt`` (the fitted tensors). The model
    files themselves stay where they are."""
    from uq_bias.campaign.state import write_json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    paths = model._campaign_paths
    relative = [os.path.relpath(Path(p).resolve(), path.resolve()) for p in paths]
    torch.save(_own_state(model), path / "state.pt")
    write_json(
        path / "bundle.json",
        {"method": model._campaign_method, "models": relative, "options": model._campaign_options},
    )


def load(path: str | Path):
    """Load what :func:`save` wrote. The model files it names are pickles: trusted files only;
    the fitted state is read with ``weights_only=True``."""
    import json

    path = Path(path)
    bundle = path / "bundle.json"
    if not bundle.is_file():
        raise FileNotFoundError(f"{str(path)!r} holds no saved uncertainty model (bundle.json)")
    spec = json.loads(bundle.read_text())
    paths = [str((path / p).resolve()) for p in spec["models"]]
    model = _tag(
        _build(spec["method"], paths, spec["options"]), spec["method"], paths, spec["options"]
    )
    for name, value in torch.load(path / "state.pt", weights_only=True).items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, value)
    return model


def _tag(model, method: str, paths: list[str], options: dict):
    """Remember how to rebuild ``model`` (for :func:`save`)."""
    model._campaign_method, model._campaign_paths, model._campaign_options = method, paths, options
    return model


@dataclass(frozen=True)
class CalculatorRecipe:
    """A picklable zero-argument factory of a (biased) :class:`uq_bias.Calculator` on the
    uncertainty model saved in the folder ``path``: what each walker builds for itself."""

    path: str
    bias: object | None = None

    def __call__(self):
        from uq_bias.calculator import Calculator

        return Calculator(load(self.path), bias=self.bias)
