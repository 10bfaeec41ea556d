"""The campaign's use of uncertainty models: fit and calibrate, save and load, predict, score.

Error metrics of a model with uncertainty on labelled frames (S structures, N atoms):

    energy_rmse_per_atom = sqrt( mean_S ((E - E_ref) / n_atoms)^2 )           eV/atom
    energy_mae_per_atom  = mean_S |E - E_ref| / n_atoms                         eV/atom
    forces_rmse          = sqrt( mean_{N, xyz} (F - F_ref)^2 )                  eV/A
    forces_mae           = mean_{N, xyz} |F - F_ref|                            eV/A
    atom_coverage        = share of atoms with |F_i - F_i,ref| <= U_i           1
    energy_coverage      = share of structures with |E - E_ref| <= U(S)         1
    spearman_atom        = Spearman rank correlation of U_i and |F_i - F_i,ref|
    mean_atom_uncertainty, mean_energy_uncertainty_per_atom                    eV/A, eV/atom
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
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
    parts: dict[str, list] = {name: [] for name in Predictions.__dataclass_fields__}
    for start in range(0, len(frames), chunk):
        batch = list(frames[start : start + chunk])
        out = model(model.graph(batch), forces=True)

        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()

        parts["energy"].append(np_(out.energy))
        parts["energy_uncertainty"].append(np_(out.energy_uncertainty))
        parts["forces"].append(np_(out.forces))
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
    from uq_bias.uncertainty.calibration import spearman

    de = (p.energy - p.energy_ref) / p.n_atoms
    df = p.forces - p.forces_ref
    atom_error = np.linalg.norm(df, axis=1)
    rho = spearman(p.atom_uncertainty, atom_error)
    return {
        "n_frames": int(len(p.energy)),
        "energy_rmse_per_atom": float(np.sqrt(np.mean(de**2))),
        "energy_mae_per_atom": float(np.mean(np.abs(de))),
        "forces_rmse": float(np.sqrt(np.mean(df**2))),
        "forces_mae": float(np.mean(np.abs(df))),
        "atom_coverage": float(np.mean(atom_error <= p.atom_uncertainty)),
        "energy_coverage": float(np.mean(np.abs(p.energy - p.energy_ref) <= p.energy_uncertainty)),
        "spearman_atom": rho if np.isfinite(rho) else 0.0,
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


def fit(
    model_paths: Sequence[str],
    train: Sequence[Atoms],
    calibration: Sequence[Atoms],
    config: cfg.CampaignConfig,
):
    """The uncertainty model of the trained model file(s): an ensemble when
    ``config.model.ensemble > 1``, else gradient features (``config.uncertainty``) fitted on
    ``train``; calibrated (``config.calibration``) on ``calibration``, frames used for nothing
    else. Returns (model, report)."""
    from uq_bias.device import resolve_device
    from uq_bias.uncertainty import calibrate
    from uq_bias.uncertainty.workflow import build

    paths = [str(p) for p in model_paths]
    options = replace(config.uncertainty, seed=config.seed)
    model = build(paths, options).to(resolve_device(config.device))
    if len(paths) == 1:
        model.fit(list(train))
    report = calibrate(model, list(calibration), **asdict(config.calibration))
    return model, report


def save(model, path: str | Path) -> None:
    """Save a fitted uncertainty model to the folder ``path`` (tensors + JSON; the model files
    stay where they are): :func:`uq_bias.uncertainty.save`."""
    from uq_bias.uncertainty import save as save_uncertainty

    save_uncertainty(model, path)


def load(path: str | Path, device: str | None = None):
    """Load what :func:`save` wrote (the model files it names are trusted pickles), on
    ``device`` (see :func:`uq_bias.device.resolve_device`)."""
    from uq_bias.uncertainty import load as load_uncertainty

    return load_uncertainty(path, device=device)
