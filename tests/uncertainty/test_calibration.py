"""Calibration: factors against their definitions, coverage on held-out GFN2-xTB frames, rank
correlation on near and far frames, metrics against closed forms, bad input."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm, spearmanr

from uq_bias.uncertainty.calibration import (
    LEVELS,
    calibrate,
    conformal_factor,
    guaranteed_coverage,
    likelihood_factor,
    metrics,
    residuals,
    spearman,
)
from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

ALPHA = 0.2


@pytest.fixture(scope="module")
def posterior(xtb_model, xtb_data):
    return GradientFeatureUncertainty(xtb_model).fit(xtb_data["train"])


def test_factors_follow_their_definitions():
    rng = np.random.default_rng(0)
    error, u = np.abs(rng.normal(size=37)), rng.uniform(0.5, 2.0, size=37)
    scores = sorted(error / u)
    q = math.ceil(38 * (1 - ALPHA))  # the q-th smallest of n = 37 scores
    assert conformal_factor(error, u, ALPHA) == scores[q - 1]
    assert conformal_factor(error, u, 0.01) == scores[-1]  # q > n: the largest score
    c = likelihood_factor(error, u)
    assert abs(np.mean(error**2 / (c * u) ** 2) - 1) < 1e-12


@pytest.mark.parametrize("n", [5, 8, 9, 30])
def test_coverage_of_few_scores_by_simulation(n):
    """With n exchangeable scores the conformal factor covers a new score with probability
    1 - alpha (n >= 9 at alpha = 0.1), else n / (n + 1): 20000 draws of n + 1 scores agree with
    what guaranteed_coverage says (for n >= 9 the coverage is at least 1 - alpha)."""
    alpha, trials = 0.1, 20000
    draws = np.random.default_rng(n).exponential(size=(trials, n + 1))
    covered = [draw[-1] <= conformal_factor(draw[:-1], np.ones(n), alpha) for draw in draws]
    closed = n / (n + 1) if n < 9 else math.ceil((n + 1) * (1 - alpha)) / (n + 1)
    assert abs(np.mean(covered) - closed) < 0.01
    assert guaranteed_coverage(n, alpha) == pytest.approx(min(closed, 1 - alpha))


def test_metrics_against_closed_forms():
    """Gaussian errors with u = 2 sigma: coverage 2 Phi(2) - 1, area mean|2 Phi(2 z_p) - 1 - p|."""
    rng = np.random.default_rng(1)
    error = np.abs(rng.normal(size=200_000))
    m = metrics(error, np.full_like(error, 2.0))
    assert abs(m["coverage"] - (2 * norm.cdf(2) - 1)) < 3e-3
    z = norm.ppf(0.5 * (1 + LEVELS))
    area = np.mean(np.abs(2 * norm.cdf(2 * z) - 1 - LEVELS))
    assert abs(m["miscalibration_area"] - area) < 3e-3
    assert abs(m["nll"] - (0.5 * np.log(2 * np.pi * 4) + 1 / 8)) < 3e-3
    assert abs(metrics(error, np.ones_like(error))["miscalibration_area"]) < 3e-3


def test_spearman_matches_scipy_and_is_nan_where_undefined():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b)[0], abs=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constant input: no scipy ConstantInputWarning
        assert math.isnan(spearman(np.ones(5), a[:5]))
        assert math.isnan(spearman(a[:5], np.full(5, 2.0)))
        assert math.isnan(spearman(a[:2], b[:2]))


def test_conformal_coverage_on_held_out_xtb_frames(posterior, xtb_data):
    """Over 200 random frame-level splits of 40 held-out GFN2-xTB frames into calibration and
    test halves, the mean test coverage is >= 1 - alpha - 0.03 (atoms) / - 0.05 (energies)."""
    pool = xtb_data["valid"] + xtb_data["test"]
    res = residuals(posterior, pool)
    per_frame = np.repeat(np.arange(len(pool)), [len(a) for a in pool])
    rng = np.random.default_rng(0)
    coverage = {"atoms": [], "energy": []}
    for _ in range(200):
        cal = np.zeros(len(pool), bool)
        cal[rng.permutation(len(pool))[: len(pool) // 2]] = True
        atom_cal = cal[per_frame]
        c = conformal_factor(res.atom_error[atom_cal], res.atom_u[atom_cal], ALPHA)
        coverage["atoms"].append(np.mean(res.atom_error[~atom_cal] <= c * res.atom_u[~atom_cal]))
        c = conformal_factor(res.energy_error[cal], res.energy_u[cal], ALPHA)
        coverage["energy"].append(np.mean(res.energy_error[~cal] <= c * res.energy_u[~cal]))
    assert np.mean(coverage["atoms"]) >= 1 - ALPHA - 0.03
    assert np.mean(coverage["energy"]) >= 1 - ALPHA - 0.05
    report = calibrate(posterior, xtb_data["valid"], alpha=ALPHA)
    assert report["forces"]["calibrated"]["coverage"] >= 1 - ALPHA


def test_uncertainty_ranks_force_errors_on_near_and_far_frames(posterior, xtb_model, xtb_data):
    """Spearman(u_i, |F_i - F_i,ref|) > 0.3 on test frames mixed with strongly rattled ones,
    for the posterior and the distance uncertainty."""
    frames = xtb_data["test"] + xtb_data["far"]
    distance = GradientFeatureUncertainty(xtb_model, method="distance").fit(xtb_data["train"])
    for model in (posterior, distance):
        res = residuals(model, frames)
        assert spearmanr(res.atom_u, res.atom_error)[0] > 0.3
        assert spearmanr(res.energy_u, res.energy_error)[0] > 0.3


def test_per_element_factors(posterior, xtb_data):
    report = calibrate(posterior, xtb_data["valid"], alpha=ALPHA, per_element=True)
    res = residuals(posterior, xtb_data["valid"])
    for symbol, z in (("H", 1), ("C", 6), ("O", 8)):
        mask = res.numbers == z
        expected = conformal_factor(res.atom_error[mask], res.atom_u[mask], ALPHA)
        assert report["factors"]["atom_per_element"][symbol] == pytest.approx(expected, rel=1e-12)
        assert float(posterior.calibration.atom[z]) == pytest.approx(expected, rel=1e-12)


def test_bad_input(posterior, xtb_data):
    unlabelled = [a.copy() for a in xtb_data["valid"][:3]]
    with pytest.raises(ValueError, match="frame 0 has no energy and forces labels"):
        calibrate(posterior, unlabelled)
    with pytest.raises(ValueError, match="empty"):
        calibrate(posterior, [])
    with pytest.raises(ValueError, match="unknown calibration"):
        calibrate(posterior, xtb_data["valid"], method="isotonic")
    with pytest.raises(ValueError, match="alpha"):
        calibrate(posterior, xtb_data["valid"], alpha=1.5)


def _synthetic_labels(model, frames, scale: float, seed: int):
    """Frames labelled by the model's own prediction plus Gaussian errors whose std per force
    component is ``scale * u_i`` (u_i the model's raw atom uncertainty) and per energy
    ``scale * u(S)``: a model whose errors are exactly Gaussian with known spread."""
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    labelled, sigmas = [], []
    for atoms in frames:
        out = model(model.graph(atoms), forces=True)
        u_atoms = (out.atom_uncertainty / model.calibration.atom[atoms.numbers]).detach().numpy()
        u_energy = float(out.energy_uncertainty.detach() / model.calibration.energy)
        forces = out.forces.detach().numpy() + rng.normal(size=(len(atoms), 3)) * (
            scale * u_atoms[:, None]
        )
        energy = float(out.energy.detach()) + rng.normal() * scale * u_energy
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, energy=energy, forces=forces)
        labelled.append(copy)
        sigmas.append(scale * u_atoms)
    return labelled, np.concatenate(sigmas)


@pytest.fixture(scope="module")
def synthetic(gradient_model, make_cu_cells):
    frames = make_cu_cells(120, seed=5)
    return frames[:60], frames[60:]


def test_likelihood_on_exactly_gaussian_errors_scores_the_true_distribution(
    gradient_model, synthetic
):
    """Per-component Gaussian force errors (std 3 u_i), calibrated by likelihood: c = 3,
    miscalibration area < 0.02 (chi-3 reliability curve), NLL = that of the true distribution,
    mean_i 0.5 log(2 pi sigma_i^2) + 1/2 per component."""
    model = copy.deepcopy(gradient_model)
    frames, sigma = _synthetic_labels(model, synthetic[0], 3.0, seed=1)
    report = calibrate(model, frames, method="likelihood")
    forces = report["forces"]["calibrated"]
    assert report["uncertainty"] == "std"
    assert report["factors"]["atom"] == pytest.approx(3.0, rel=0.05)
    assert forces["miscalibration_area"] < 0.02
    true_nll = np.mean(0.5 * np.log(2 * np.pi * sigma**2)) + 0.5
    assert forces["nll"] == pytest.approx(true_nll, abs=0.05)
    assert report["energy"]["calibrated"]["miscalibration_area"] < 0.1  # 60 energies only


def test_conformal_reports_its_coverage_on_held_out_frames(gradient_model, synthetic):
    model = copy.deepcopy(gradient_model)
    calibration, _ = _synthetic_labels(model, synthetic[0], 3.0, seed=2)
    held_out, _ = _synthetic_labels(model, synthetic[1], 3.0, seed=3)
    report = calibrate(model, calibration, method="conformal", alpha=ALPHA, held_out=held_out)
    assert report["uncertainty"] == "quantile"
    test = report["held_out"]["forces"]
    assert report["held_out"]["n_frames"] == len(held_out) and test["n"] == sum(map(len, held_out))
    assert abs(test["coverage"] - (1 - ALPHA)) < 0.04  # 60 frames x 8 atoms, not calibrated on
    assert test["miscalibration_area"] < 0.03  # the implied chi-3 Gaussian fits these errors
