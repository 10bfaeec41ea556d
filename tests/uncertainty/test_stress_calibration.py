"""Calibration of the ensemble stress uncertainty on EMT-labelled periodic Cu/Al cells: the factor
against a direct numpy computation from each member's stress, conformal coverage on frames not
used to calibrate against its binomial/Beta error, saving and loading the factor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference_data import rattled_cu_frames

from uq_bias.calculator import Calculator
from uq_bias.uncertainty.calibration import calibrate, evaluate, residuals
from uq_bias.uncertainty.ensemble import Ensemble

ALPHA = 0.2


def _cells(n: int, seed: int):
    """``n`` rattled, strained 8-atom Cu/Al cells labelled by EMT (energy, forces, stress), drawn
    independently like the frames the ensemble was fitted to."""
    return rattled_cu_frames(n, seed=seed, size=(2, 1, 1), amplitude=0.1)


@pytest.fixture
def ensemble(fitted_ensemble):
    """The readout-fitted Cu/Al ensemble with fresh (unit) calibration factors."""
    return Ensemble(list(fitted_ensemble.members))


def direct_stress_residuals(members, frames):
    """(r_sigma, u_sigma) per frame from each member's own ASE stress (Voigt, eV/A^3): r the
    Voigt norm of (member mean - EMT label), u the root mean over the 6 components of the
    members' population variance."""
    errors, spreads = [], []
    for atoms in frames:
        label = atoms.get_stress()
        member_stress = []
        for member in members:
            probe = atoms.copy()
            probe.calc = Calculator(member)
            member_stress.append(probe.get_stress())
        member_stress = np.array(member_stress)  # (K, 6)
        errors.append(np.linalg.norm(member_stress.mean(0) - label))
        spreads.append(np.sqrt(member_stress.var(0).mean()))
    return np.array(errors), np.array(spreads)


@pytest.mark.parametrize("method", ["conformal", "likelihood"])
def test_stress_factor_is_the_formula_on_the_same_residuals(ensemble, method):
    """c_sigma = the ceil((n+1)(1-alpha))-th smallest r/u (conformal) or sqrt(mean (r/u)^2 / 6)
    (likelihood), with r and u recomputed here from the members one at a time; the calibrated
    stress_uncertainty is c_sigma times the members' spread."""
    frames = _cells(24, seed=21)
    report = calibrate(ensemble, frames, method=method, alpha=ALPHA)
    r, u = direct_stress_residuals(ensemble.members, frames)
    scores = np.sort(r / u)
    if method == "conformal":
        expected = scores[math.ceil((len(scores) + 1) * (1 - ALPHA)) - 1]
    else:
        expected = np.sqrt(np.mean(scores**2) / 6)
    assert report["factors"]["stress"] == pytest.approx(expected, rel=1e-9)
    assert float(ensemble.calibration.stress) == pytest.approx(expected, rel=1e-12)
    assert report["n_stress_frames"] == len(frames)
    probe = frames[0].copy()
    probe.calc = Calculator(ensemble)
    probe.get_stress()
    members = np.array([_stress(m, frames[0]) for m in ensemble.members])
    np.testing.assert_allclose(
        probe.calc.results["stress_uncertainty"], expected * members.std(0), rtol=1e-9
    )
    covered = np.mean(r <= expected * u)
    assert report["stress"]["calibrated"]["coverage"] == pytest.approx(covered)
    assert report["stress"]["raw"]["coverage"] == pytest.approx(np.mean(r <= u))


def _stress(member, atoms):
    probe = atoms.copy()
    probe.calc = Calculator(member)
    return probe.get_stress()


def test_conformal_stress_coverage_on_frames_not_used_to_calibrate(ensemble):
    """Calibrated on n = 120 cells, the stress coverage on m = 240 other cells drawn from the same
    distribution is q/(n+1) on average (q = ceil((n+1)(1-alpha)); exchangeable scores), within
    4 standard deviations of the test coverage: Var = Var(C) + E[C(1-C)]/m with C ~ Beta(q,
    n+1-q) the coverage given the calibration set and the binomial count of m test frames."""
    n, m = 120, 240
    report = calibrate(ensemble, _cells(n, seed=31), alpha=ALPHA)
    held_out = evaluate(ensemble, _cells(m, seed=32), alpha=ALPHA)
    q = math.ceil((n + 1) * (1 - ALPHA))
    a, b = q, n + 1 - q
    mean = a / (a + b)
    var_c = a * b / ((a + b) ** 2 * (a + b + 1))
    var = var_c + (mean - (var_c + mean**2)) / m
    coverage = held_out["stress"]["coverage"]
    print(
        f"stress coverage on {m} test cells: {coverage:.3f} (expected {mean:.3f} +- {var**0.5:.3f})"
    )
    assert held_out["n_stress_frames"] == m
    assert abs(coverage - mean) <= 4 * math.sqrt(var)
    assert report["stress"]["calibrated"]["coverage"] >= 1 - ALPHA  # in-sample: by construction
    for key in ("nll", "miscalibration_area", "spearman"):
        assert np.isfinite(held_out["stress"][key])


def test_without_stress_labels_there_is_no_stress_factor(ensemble, cu8_frames):
    """Frames without stress labels (and molecules) leave the stress factor at 1."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for atoms in cu8_frames[:4]:
        copy = atoms.copy()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        copy.calc = SinglePointCalculator(copy, **results)
        frames.append(copy)
    report = calibrate(ensemble, frames)
    assert report["factors"]["stress"] is None and "stress" not in report
    assert float(ensemble.calibration.stress) == 1.0
    assert len(residuals(ensemble, frames).stress_error) == 0


def test_stress_factor_saves_and_an_older_state_loads(ensemble, tmp_path):
    """The stress factor survives save/load; a state saved before it existed loads with 1."""
    import json

    from uq_bias.uncertainty.io import CONFIG_FILE, STATE_FILE, load, save

    frames = _cells(6, seed=41)
    calibrate(ensemble, frames, method="likelihood")
    for k, member in enumerate(ensemble.members):
        torch.save(member, tmp_path / f"m{k}.model")
    model = Ensemble([str(tmp_path / f"m{k}.model") for k in range(len(ensemble.members))])
    model.calibration.load_state_dict(ensemble.calibration.state_dict())
    save(model, tmp_path / "unc")
    loaded = load(tmp_path / "unc")
    assert float(loaded.calibration.stress) == float(ensemble.calibration.stress) != 1.0
    state = torch.load(tmp_path / "unc" / STATE_FILE, weights_only=True)
    del state["calibration.stress"]
    torch.save(state, tmp_path / "unc" / STATE_FILE)
    config = json.loads((tmp_path / "unc" / CONFIG_FILE).read_text())
    del config["state_sha256"]  # nor did such a save record its state's checksum
    (tmp_path / "unc" / CONFIG_FILE).write_text(json.dumps(config))
    assert float(load(tmp_path / "unc").calibration.stress) == 1.0


def test_gradient_features_give_no_stress_factor(fitted_ensemble, cu8_frames):
    """Gradient-feature models give no stress uncertainty (not implemented): calibrating them on
    periodic frames with stress labels fits energy and forces only."""
    from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

    model = GradientFeatureUncertainty(fitted_ensemble.members[0]).fit(cu8_frames)
    report = calibrate(model, _cells(6, seed=61))
    assert report["factors"]["stress"] is None and "stress" not in report
    assert float(model.calibration.stress) == 1.0
