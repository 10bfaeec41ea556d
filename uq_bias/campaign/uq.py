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

and, over the P periodic frames with a stress label (``n_stress_frames``; absent without any):

    stress_rmse          = sqrt( mean_{P, 3x3} (sigma - sigma_ref)^2 )          eV/A^3
    stress_mae           = mean_{P, 3x3} |sigma - sigma_ref|                    eV/A^3

and, when the model gives a stress uncertainty (ensembles), with r = ||sigma - sigma_ref||_V
and U_sigma = sqrt(mean_v U_v^2) over the 6 Voigt components
(:mod:`uq_bias.uncertainty.calibration`):

    stress_coverage      = share of frames with r <= U_sigma                    1
    stress_nll, stress_miscalibration_area   of the Gaussian each calibration method implies
    spearman_stress      = Spearman rank correlation of U_sigma and r
    mean_stress_uncertainty = mean U_sigma                                      eV/A^3
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
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
        stress, stress_ref: (P, 6) Voigt stress (xx yy zz yz xz xy), eV/A^3, of the P periodic
            frames with a stress label.
        stress_uncertainty: (P, 6) calibrated U_sigma per Voigt component, eV/A^3 (NaN when the
            model gives none).
    """

    energy: np.ndarray
    energy_ref: np.ndarray
    energy_uncertainty: np.ndarray
    n_atoms: np.ndarray
    forces: np.ndarray
    forces_ref: np.ndarray
    atom_uncertainty: np.ndarray
    numbers: np.ndarray
    stress: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    stress_ref: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    stress_uncertainty: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))


def predict(model, frames: Sequence[Atoms], chunk: int = 16) -> Predictions:
    """Predictions of an uncertainty model on labelled ``frames`` (labels in ``atoms.calc``;
    the stress of the periodic frames that have a stress label)."""
    from uq_bias.uncertainty.calibration import stress_label, voigt

    parts: dict[str, list] = {name: [] for name in Predictions.__dataclass_fields__}
    for start in range(0, len(frames), chunk):
        batch = list(frames[start : start + chunk])
        labels = [stress_label(a) for a in batch]
        rows = [j for j, label in enumerate(labels) if label is not None]
        out = model(model.graph(batch), forces=True, stress=bool(rows))

        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().double().numpy()

        if rows:
            parts["stress"].append(voigt(np_(out.stress)[rows]))
            parts["stress_ref"].append(np.stack([labels[j] for j in rows]))
            u = out.stress_uncertainty
            u = np.full((len(rows), 6), np.nan) if u is None else voigt(np_(u)[rows])
            parts["stress_uncertainty"].append(u)

        parts["energy"].append(np_(out.energy))
        parts["energy_uncertainty"].append(np_(out.energy_uncertainty))
        parts["forces"].append(np_(out.forces))
        parts["atom_uncertainty"].append(np_(out.atom_uncertainty))
        parts["energy_ref"].append([a.get_potential_energy() for a in batch])
        parts["forces_ref"].append(np.concatenate([a.get_forces() for a in batch]))
        parts["n_atoms"].append([len(a) for a in batch])
        parts["numbers"].append(np.concatenate([a.numbers for a in batch]))
    stress = {k: parts.pop(k) for k in ("stress", "stress_ref", "stress_uncertainty")}
    joined = {k: np.concatenate([np.asarray(v) for v in vs]) for k, vs in parts.items()}
    joined |= {k: np.concatenate(vs) for k, vs in stress.items() if vs}
    return Predictions(**joined)


def error_metrics(
    p: Predictions, method: str = "conformal", alpha: float = 0.1
) -> dict[str, float]:
    """The metrics of the module docstring; ``method`` and ``alpha`` (the calibration's) say
    what the stress uncertainty means for its NLL and miscalibration area."""
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
    } | stress_metrics(p, method, alpha)


def stress_metrics(p: Predictions, method: str, alpha: float) -> dict[str, float]:
    """The stress metrics of the module docstring ({} without periodic stress labels)."""
    from uq_bias.uncertainty.calibration import STRESS_DOF, metrics

    if not len(p.stress):
        return {}
    full = np.concatenate([p.stress - p.stress_ref, (p.stress - p.stress_ref)[:, 3:]], axis=1)
    result = {
        "n_stress_frames": int(len(p.stress)),
        "stress_rmse": float(np.sqrt(np.sum(full**2) / (9 * len(full)))),
        "stress_mae": float(np.sum(np.abs(full)) / (9 * len(full))),
    }
    if np.isnan(p.stress_uncertainty).any():
        return result
    error = np.linalg.norm(p.stress - p.stress_ref, axis=1)
    u = np.sqrt(np.mean(p.stress_uncertainty**2, axis=1))
    m = metrics(error, u, method=method, alpha=alpha, dof=STRESS_DOF)
    rho = m["spearman"]
    return result | {
        "stress_coverage": m["coverage"],
        "stress_nll": m["nll"],
        "stress_miscalibration_area": m["miscalibration_area"],
        "spearman_stress": rho if np.isfinite(rho) else 0.0,
        "mean_stress_uncertainty": m["mean_uncertainty"],
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
