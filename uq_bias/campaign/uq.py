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
    model = _build(u.method, list(model_paths), u, train)
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


def _build(method: str, paths: list[str], u: cfg.UncertaintyConfig, train):
    if method == "ensemble":
        from uq_bias.uncertainty.ensemble import Ensemble

        model = Ensemble(paths)
        model._paths = paths
        return model
    raise NotImplementedError(method)


def save(model, path: str | Path) -> None:
    """Save a fitted uncertainty model to the folder ``path`` (tensors + JSON)."""
    from uq_bias.campaign.state import write_json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(dict(model.calibration.state_dict()), path / "calibration.pt")
    write_json(path / "bundle.json", {"method": "ensemble", "members": model._paths})


def load(path: str | Path):
    """Load what :func:`save` wrote (a folder of tensors + JSON; model files are pickles)."""
    import json

    path = Path(path)
    spec = json.loads((path / "bundle.json").read_text())
    model = _build(spec["method"], spec["members"], None, None)
    state = torch.load(path / "calibration.pt", weights_only=True)
    model.calibration.load_state_dict(state)
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
