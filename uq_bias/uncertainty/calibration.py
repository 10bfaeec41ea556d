"""Calibration of uncertainties on a labelled validation set, and calibration metrics.

What the calibrated uncertainty U means depends on the calibration (``report["uncertainty"]``):

    conformal   U is the (1 - alpha) quantile of the error: P(|dE| <= U) >= 1 - alpha for the
                energy, P(|dF_i| <= U_i) >= 1 - alpha for the force-error norm of an atom
                (distribution-free, for exchangeable data).
    likelihood  U is the standard deviation of a Gaussian error: dE ~ N(0, U^2) for the energy,
                dF_ia ~ N(0, U_i^2) for each Cartesian component of an atom's force error, so
                that |dF_i| / U_i follows a chi distribution with 3 degrees of freedom.

The stress (periodic frames with stress labels, models that give a stress uncertainty: ensembles;
the gradient-feature models give none and keep c_sigma = 1): one score per structure,

    r_sigma(S) = ||sigma - sigma_ref||_V = sqrt( sum_{v in Voigt} (sigma_v - sigma_ref,v)^2 )
    u_sigma(S) = sqrt( mean_{v in Voigt} u_v^2 )

over the 6 independent components v = xx, yy, zz, yz, xz, xy of the symmetric 3x3 stress (eV/A^3),
u_v the raw per-component uncertainty (the members' spread std_k sigma_k,v), k = 6 components:

    conformal   P(r_sigma <= U_sigma) >= 1 - alpha      with U_sigma(S) = c_sigma u_sigma(S)
    likelihood  sigma_v - sigma_ref,v ~ N(0, U_sigma(S)^2) for each Voigt component v

(the same shape as the atoms: a norm over k components against a root-mean-square spread).

Scores r / u with r the error and u the raw uncertainty (energies: r = |E - E_ref| in eV against
u(S), k = 1 component; atoms: r = ||F_i - F_i,ref|| in eV/A against u_i, k = 3 components; the
stress: r_sigma against u_sigma, k = 6 components):

    conformal   c = q-th smallest score, q = ceil((n + 1)(1 - alpha))
                (P(r <= c u) >= 1 - alpha; if q > n, fewer than 9 scores at alpha = 0.1, the
                largest score, which guarantees only n / (n + 1): the report's
                ``guaranteed_coverage``)
    likelihood  c = sqrt( mean(r^2 / u^2) / k )
                (maximises the likelihood of r-vectors ~ N(0, c^2 u^2 I_k))

per element: one atom factor per element present in the validation set (computed from that
element's atoms only), the global factor for the others. The energy and stress factors are always
global.

Metrics of calibrated uncertainties U, with the Gaussian scale s each calibration implies
(likelihood: s = U; conformal: s = U / chi_k^-1(1 - alpha), the Gaussian whose 1 - alpha quantile
of |r| is U):

    coverage            mean(r <= U)                      (conformal: 1 - alpha is the target)
    nll                 mean( 0.5 log(2 pi s^2) + r^2 / (2 k s^2) )   per error component
    miscalibration_area mean over p in (0, 1) of | mean(r <= s chi_k^-1(p)) - p |
    spearman            Spearman rank correlation of U and r

chi_k^-1 is the quantile function of the chi distribution with k degrees of freedom (k = 1: the
half-normal, |N(0, 1)|).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from uq_bias.options import option
from uq_bias.uncertainty.base import UncertaintyModel

CalibrationMethod = Literal["conformal", "likelihood"]
CALIBRATION_METHODS = get_args(CalibrationMethod)


@dataclass(frozen=True)
class CalibrationOptions:
    """How the calibration factors are fitted on labelled validation frames."""

    method: CalibrationMethod = option(
        "conformal",
        "conformal (U is the 1 - alpha quantile of the error) or likelihood (U is the standard "
        "deviation of a Gaussian error).",
    )
    alpha: float = option(0.1, "Miscoverage level of conformal calibration (coverage 1 - alpha).")
    per_element: bool = option(False, "One force calibration factor per element.")

    def __post_init__(self):
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


LEVELS = np.linspace(0.01, 0.99, 99)


@dataclass
class Residuals:
    """Errors and raw uncertainties of S labelled structures with N atoms.

    Attributes:
        energy_error: (S,) |E - E_ref|, eV.   energy_u: (S,) raw u(S).
        atom_error: (N,) ||F_i - F_i,ref||, eV/A.   atom_u: (N,) raw u_i.
        numbers: (N,) atomic numbers.
        stress_error: (P,) ||sigma - sigma_ref||_V, eV/A^3, of the P periodic frames with a
            stress label (none when the model gives no stress uncertainty).
        stress_u: (P,) raw u_sigma(S), eV/A^3 (see the module docstring).
    """

    energy_error: np.ndarray
    energy_u: np.ndarray
    atom_error: np.ndarray
    atom_u: np.ndarray
    numbers: np.ndarray
    stress_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stress_u: np.ndarray = field(default_factory=lambda: np.zeros(0))


#: ASE's Voigt order of a symmetric 3x3 stress: xx yy zz yz xz xy.
VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])


def voigt(stress: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6) in ASE's Voigt order (xx yy zz yz xz xy)."""
    stress = np.asarray(stress)
    return stress[..., VOIGT[0], VOIGT[1]]


def stress_spread(u: np.ndarray) -> np.ndarray:
    """(S, 3, 3) per-component stress uncertainty -> (S,) u_sigma = sqrt(mean_v u_v^2) over the 6
    Voigt components, eV/A^3."""
    return np.sqrt(np.mean(voigt(u) ** 2, axis=-1))


def conformal_factor(error: np.ndarray, u: np.ndarray, alpha: float) -> float:
    """c = the ceil((n+1)(1-alpha))-th smallest of error / u (see the module docstring)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    scores = np.sort(_scores(error, u))
    rank = min(len(scores), math.ceil((len(scores) + 1) * (1 - alpha)))
    return float(scores[rank - 1])


def guaranteed_coverage(n: int, alpha: float) -> float:
    """The coverage the conformal factor of ``n`` scores guarantees: 1 - alpha when
    q = ceil((n + 1)(1 - alpha)) <= n, else n / (n + 1) (q > n: the largest score is taken,
    short of the 1 - alpha quantile, which would be infinite; n >= (1 - alpha) / alpha
    scores, 9 at alpha = 0.1, are needed for the full guarantee)."""
    return 1 - alpha if math.ceil((n + 1) * (1 - alpha)) <= n else n / (n + 1)


def likelihood_factor(error: np.ndarray, u: np.ndarray, dof: int = 1) -> float:
    """c = sqrt(mean(error^2 / u^2) / dof): the Gaussian scale per component of a ``dof``-vector
    error whose norm is ``error``."""
    return float(np.sqrt(np.mean(_scores(error, u) ** 2) / dof))


def _scores(error: np.ndarray, u: np.ndarray) -> np.ndarray:
    if len(error) == 0:
        raise ValueError("calibration needs at least one validation value, got none")
    return np.abs(error) / np.maximum(u, np.finfo(np.float64).tiny)


def factor(error: np.ndarray, u: np.ndarray, method: str, alpha: float, dof: int = 1) -> float:
    """The calibration factor of ``method`` (one of ``CALIBRATION_METHODS``)."""
    if method == "conformal":
        return conformal_factor(error, u, alpha)
    if method == "likelihood":
        return likelihood_factor(error, u, dof)
    raise ValueError(f"unknown calibration {method!r}; choose one of {list(CALIBRATION_METHODS)}")


def gaussian_scale(u: np.ndarray, method: str, alpha: float, dof: int) -> np.ndarray:
    """The per-component Gaussian standard deviation s that calibrated ``u`` stands for:
    s = u (likelihood) or u / chi_dof^-1(1 - alpha) (conformal: u is that quantile)."""
    from scipy.stats import chi

    return np.asarray(u) if method == "likelihood" else np.asarray(u) / chi.ppf(1 - alpha, dof)


def observed_coverage(error: np.ndarray, scale: np.ndarray, dof: int = 1, levels=LEVELS):
    """(L,) mean(error <= scale chi_dof^-1(p)) for each expected coverage p in ``levels``."""
    from scipy.stats import chi

    radius = chi.ppf(np.asarray(levels), dof)
    return (np.abs(error)[None, :] <= radius[:, None] * scale[None, :]).mean(axis=1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of ``a`` and ``b`` (same length); NaN when it is undefined:
    fewer than 3 values or either input constant (checked here, so scipy warns about nothing)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(spearmanr(a, b)[0])


def metrics(
    error: np.ndarray,
    u: np.ndarray,
    *,
    method: str = "likelihood",
    alpha: float = 0.1,
    dof: int = 1,
) -> dict[str, float]:
    """Coverage, NLL, miscalibration area and Spearman correlation of calibrated ``u`` for
    errors whose norm over ``dof`` components is ``error`` (see the module docstring)."""
    scale = np.maximum(gaussian_scale(u, method, alpha, dof), np.finfo(np.float64).tiny)
    nll = np.mean(0.5 * np.log(2 * np.pi * scale**2) + error**2 / (2 * dof * scale**2))
    observed = observed_coverage(error, scale, dof)
    return {
        "n": int(len(error)),
        "coverage": float(np.mean(np.abs(error) <= u)),
        "nll": float(nll),
        "miscalibration_area": float(np.mean(np.abs(observed - LEVELS))),
        "spearman": spearman(u, error),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mean_uncertainty": float(np.mean(u)),
    }


def labels_of(atoms: Atoms, index: int) -> tuple[float, np.ndarray]:
    """(E (eV), F (N, 3) eV/A) of a labelled frame; ValueError naming frame ``index`` without
    them, or with a NaN or infinite label (which would make the calibration factor NaN)."""
    try:
        energy, forces = float(atoms.get_potential_energy()), np.asarray(atoms.get_forces())
    except Exception as err:  # no calculator, or one without energy/forces
        raise ValueError(
            f"calibration frame {index} has no energy and forces labels ({type(err).__name__}: "
            f"{err}); label the frames with a reference calculator or read an extended XYZ "
            "file that holds energy and forces (under other keys: uq-bias calibrate "
            "--key-energy, --key-forces)"
        ) from err
    bad_atoms = np.flatnonzero(~np.isfinite(forces).all(axis=1)) if forces.ndim == 2 else []
    if not np.isfinite(energy) or len(bad_atoms):
        what = f"energy label {energy}" if not np.isfinite(energy) else ""
        if len(bad_atoms):
            atoms_text = ", ".join(str(i) for i in bad_atoms[:5]) + (", ..." * (len(bad_atoms) > 5))
            what += (" and " if what else "") + f"non-finite force labels on atom(s) {atoms_text}"
        raise ValueError(
            f"calibration frame {index} has {what} (NaN or inf: a failed reference calculation?); "
            "remove the frame or label it again"
        )
    return energy, forces


def stress_label(atoms: Atoms) -> np.ndarray | None:
    """The (6,) Voigt stress label (eV/A^3) of a frame periodic in all three directions, or None
    (a molecule, or a frame labelled without stress)."""
    from ase.calculators.calculator import PropertyNotImplementedError

    if not atoms.pbc.all() or atoms.calc is None:
        return None
    try:
        return np.asarray(atoms.get_stress(voigt=True), dtype=np.float64)
    except PropertyNotImplementedError:
        return None


def residuals(model: UncertaintyModel, frames: Sequence[Atoms], batch_size: int = 8) -> Residuals:
    """Errors of ``model`` on labelled ``frames`` beside its raw (uncalibrated) uncertainties;
    the stress of the periodic frames with a stress label when the model gives a stress
    uncertainty."""
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise ValueError("calibration needs labelled validation frames, got an empty set")
    labels = [labels_of(atoms, k) for k, atoms in enumerate(frames)]
    stresses = [stress_label(atoms) for atoms in frames]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in Residuals.__dataclass_fields__}
    scales = model.calibration
    for start in range(0, len(frames), batch_size):
        graph = model.graph(frames[start : start + batch_size])
        labelled = stresses[start : start + batch_size]
        stress = model.gives_stress_uncertainty and any(s is not None for s in labelled)
        out = model(graph, forces=True, stress=stress)
        if stress and out.stress_uncertainty is not None:
            rows = [j for j, s in enumerate(labelled) if s is not None]
            error = voigt(_np(out.stress)[rows]) - np.stack([labelled[j] for j in rows])
            raw = _np(out.stress_uncertainty)[rows] / float(scales.stress)
            parts["stress_error"].append(np.linalg.norm(error, axis=1))
            parts["stress_u"].append(stress_spread(raw))
        energy_u = out.energy_uncertainty / scales.energy
        atom_u = out.atom_uncertainty / scales.atom[graph.atomic_numbers]
        ref_e = np.array([e for e, _ in labels[start : start + batch_size]])
        ref_f = np.concatenate([f for _, f in labels[start : start + batch_size]])
        parts["energy_error"].append(np.abs(_np(out.energy) - ref_e))
        parts["energy_u"].append(_np(energy_u))
        parts["atom_error"].append(np.linalg.norm(_np(out.forces) - ref_f, axis=1))
        parts["atom_u"].append(_np(atom_u))
        parts["numbers"].append(_np(graph.atomic_numbers).astype(int))
    joined = {name: np.concatenate(v) if v else np.zeros(0) for name, v in parts.items()}
    return Residuals(**joined)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy()


def calibrate(
    model: UncertaintyModel,
    frames: Sequence[Atoms],
    *,
    method: str = CalibrationOptions.method,
    alpha: float = CalibrationOptions.alpha,
    per_element: bool = CalibrationOptions.per_element,
    batch_size: int = 8,
    held_out: Sequence[Atoms] | None = None,
) -> dict:
    """Set ``model.calibration`` from labelled validation ``frames``; return the report dict.

    The report holds the method, what U means (``uncertainty``: ``quantile`` of level 1 - alpha
    or Gaussian ``std``), alpha, the factors, metrics before (raw, c = 1) and after calibration
    for energies (1 component), per-atom forces (3 components) and, with periodic frames that
    have stress labels and a model that gives a stress uncertainty, the stress (6 Voigt
    components; factor ``factors["stress"]``, else None and the model's stress factor is left
    as it is), and the reliability curves, all on ``frames``. With ``held_out`` (labelled
    frames not used to calibrate), its ``held_out`` entry has the calibrated metrics on those:
    the honest coverage.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"unknown calibration {method!r}; choose one of {list(CALIBRATION_METHODS)}"
        )
    res = residuals(model, frames, batch_size)
    c_energy = factor(res.energy_error, res.energy_u, method, alpha, dof=1)
    c_global = factor(res.atom_error, res.atom_u, method, alpha, dof=3)
    atom = torch.full_like(model.calibration.atom, c_global)
    per_z = {}
    if per_element:
        for z in np.unique(res.numbers):
            mask = res.numbers == z
            per_z[chemical_symbols[z]] = factor(
                res.atom_error[mask], res.atom_u[mask], method, alpha, dof=3
            )
            atom[int(z)] = per_z[chemical_symbols[z]]
    c_stress = None
    if len(res.stress_error):
        c_stress = factor(res.stress_error, res.stress_u, method, alpha, dof=STRESS_DOF)
    model.calibration.set(c_energy, atom, c_stress)
    report = {
        "method": method,
        "uncertainty": "quantile" if method == "conformal" else "std",
        "alpha": alpha,
        "per_element": per_element,
        "factors": {
            "energy": c_energy,
            "atom": c_global,
            "atom_per_element": per_z,
            "stress": c_stress,
        },
    }
    if method == "conformal":
        counts = {"energy": len(res.energy_error), "forces": len(res.atom_error)}
        if len(res.stress_error):
            counts["stress"] = len(res.stress_error)
        report["guaranteed_coverage"] = {
            name: {"values": n, "coverage": guaranteed_coverage(n, alpha)}
            for name, n in counts.items()
        }
    ones = np.ones_like(atom.cpu().numpy())
    raw = _metrics(res, 1.0, ones, method, alpha, 1.0)
    report |= _metrics(res, c_energy, atom.cpu().numpy(), method, alpha, c_stress or 1.0)
    report["energy"] = {"raw": raw["energy"], "calibrated": report["energy"]}
    report["forces"] = {"raw": raw["forces"], "calibrated": report["forces"]}
    if "stress" in report:
        report["stress"] = {"raw": raw["stress"], "calibrated": report["stress"]}
    if held_out is not None:
        report["held_out"] = evaluate(model, held_out, method=method, alpha=alpha)
    return report


def evaluate(
    model: UncertaintyModel,
    frames: Sequence[Atoms],
    *,
    method: str = CalibrationOptions.method,
    alpha: float = CalibrationOptions.alpha,
    batch_size: int = 8,
) -> dict:
    """Metrics of the calibrated ``model`` on labelled ``frames`` (frames not used to calibrate
    it, for an honest coverage); ``method`` and ``alpha`` say what its U means."""
    res = residuals(model, frames, batch_size)
    scales = model.calibration
    atom = scales.atom.cpu().numpy()
    report = _metrics(res, float(scales.energy), atom, method, alpha, float(scales.stress))
    names = ("n_frames", "n_atoms", "energy", "forces", "n_stress_frames", "stress")
    return {key: report[key] for key in names if key in report}


#: Independent components of the stress error (Voigt) in the stress scores.
STRESS_DOF = 6


def _metrics(
    res: Residuals,
    c_energy: float,
    atom: np.ndarray,
    method: str,
    alpha: float,
    c_stress: float = 1.0,
):
    """Metrics, points and reliability curves of the raw uncertainties scaled by the factors
    (the stress entries only when ``res`` holds stress residuals)."""
    energy_u = c_energy * res.energy_u
    atom_u = res.atom_u * atom[res.numbers]
    scale = {"method": method, "alpha": alpha}
    energy_s = gaussian_scale(energy_u, method, alpha, 1)
    atom_s = gaussian_scale(atom_u, method, alpha, 3)
    report = {
        "n_frames": int(len(res.energy_error)),
        "n_atoms": int(len(res.atom_error)),
        "energy": metrics(res.energy_error, energy_u, dof=1, **scale),
        "forces": metrics(res.atom_error, atom_u, dof=3, **scale),
        "points": _points(res, energy_u, atom_u),
        "reliability": {
            "expected": LEVELS.tolist(),
            "energy": observed_coverage(res.energy_error, energy_s, 1).tolist(),
            "forces": observed_coverage(res.atom_error, atom_s, 3).tolist(),
        },
    }
    if len(res.stress_error):
        stress_u = c_stress * res.stress_u
        stress_s = gaussian_scale(stress_u, method, alpha, STRESS_DOF)
        report["n_stress_frames"] = int(len(res.stress_error))
        report["stress"] = metrics(res.stress_error, stress_u, dof=STRESS_DOF, **scale)
        report["points"] |= {
            "stress_error": res.stress_error.tolist(),
            "stress_uncertainty": stress_u.tolist(),
        }
        report["reliability"]["stress"] = observed_coverage(
            res.stress_error, stress_s, STRESS_DOF
        ).tolist()
    return report


def _points(res: Residuals, energy_u: np.ndarray, atom_u: np.ndarray, limit: int = 2000) -> dict:
    """Errors and calibrated uncertainties for the scatter plot (at most ``limit`` atoms)."""
    keep = np.linspace(0, len(atom_u) - 1, min(limit, len(atom_u))).astype(int)
    return {
        "energy_error": res.energy_error.tolist(),
        "energy_uncertainty": energy_u.tolist(),
        "atom_error": res.atom_error[keep].tolist(),
        "atom_uncertainty": atom_u[keep].tolist(),
    }
