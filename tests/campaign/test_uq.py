"""The campaign's uncertainty glue: fit + calibrate, save + load, predictions and metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from uq_bias.campaign import config as cfg
from uq_bias.campaign import uq


@pytest.fixture(scope="module")
def member_files(tmp_path_factory):
    from uq_bias.models import load_model
    from uq_bias.training import build_mace, save_model

    folder = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (0, 1):
        mace = build_mace([13, 29], cutoff=4.0, preset="tiny", seed=seed)
        paths.append(str(save_model(load_model(mace), folder / f"member_{seed}.model")))
    return paths


def campaign_config(method: str) -> cfg.CampaignConfig:
    ensemble = 2 if method == "ensemble" else 1
    return cfg.from_dict(
        {
            "data": {"structures": "x.xyz"},
            "model": {"ensemble": ensemble},
            "calibration": {"method": "likelihood"},
        }
    )


@pytest.mark.parametrize("method", ["posterior", "ensemble"])
def test_fit_save_load_predict(method, member_files, cu_frames, tmp_path):
    from uq_bias.models import load_model

    paths = member_files if method == "ensemble" else member_files[:1]
    model, report = uq.fit(paths, cu_frames[:6], cu_frames[6:], campaign_config(method))
    predictions = uq.predict(model, cu_frames)
    # likelihood calibration: U_i is the std of each force component, so on the validation
    # frames mean(|dF_i|^2 / U_i^2) = 3 (three components per atom)
    valid = uq.predict(model, cu_frames[6:])
    error = np.linalg.norm(valid.forces - valid.forces_ref, axis=1)
    assert np.mean(error**2 / valid.atom_uncertainty**2) == pytest.approx(3.0, rel=1e-8)
    assert report["factors"]["atom"] > 0
    # the energy is the (mean) energy of the member models, evaluated directly
    members = [load_model(p) for p in paths]
    direct = np.mean([[m(m.graph(a)).energy.item() for a in cu_frames] for m in members], axis=0)
    np.testing.assert_allclose(predictions.energy, direct, rtol=1e-10)
    np.testing.assert_allclose(
        predictions.energy_ref, [a.get_potential_energy() for a in cu_frames], rtol=0
    )
    # saved and loaded: the same numbers
    uq.save(model, tmp_path / "u")
    again = uq.predict(uq.load(tmp_path / "u"), cu_frames)
    np.testing.assert_allclose(again.atom_uncertainty, predictions.atom_uncertainty, rtol=1e-12)
    np.testing.assert_allclose(again.energy_uncertainty, predictions.energy_uncertainty, rtol=1e-12)


def test_error_metrics_match_direct_formulas():
    rng = np.random.default_rng(0)
    n = np.array([3, 5])
    p = uq.Predictions(
        energy=np.array([1.0, 2.0]),
        energy_ref=np.array([1.3, 1.0]),
        energy_uncertainty=np.array([0.5, 0.5]),
        n_atoms=n,
        forces=rng.normal(size=(8, 3)),
        forces_ref=rng.normal(size=(8, 3)),
        atom_uncertainty=rng.uniform(0.5, 2.0, size=8),
        numbers=np.full(8, 29),
    )
    m = uq.error_metrics(p)
    assert m["energy_rmse_per_atom"] == pytest.approx(np.sqrt((0.1**2 + 0.2**2) / 2))
    assert m["energy_mae_per_atom"] == pytest.approx((0.1 + 0.2) / 2)
    diff = (p.forces - p.forces_ref).ravel()
    assert m["forces_rmse"] == pytest.approx(np.sqrt(np.mean(diff**2)))
    norms = np.linalg.norm(p.forces - p.forces_ref, axis=1)
    assert m["atom_coverage"] == pytest.approx(np.mean(norms <= p.atom_uncertainty))
    assert m["energy_coverage"] == 0.5
    assert m["spearman_atom"] == pytest.approx(spearmanr(p.atom_uncertainty, norms)[0])


@pytest.mark.parametrize("method", ["conformal", "likelihood"])
def test_stress_metrics_match_direct_formulas(method):
    """Stress RMSE/MAE over the 9 components of each 3x3 error (built here from Voigt), coverage
    of the Voigt-norm error by U_sigma = sqrt(mean_v U_v^2), Spearman (scipy) and the Gaussian
    NLL of 6 components with scale U_sigma (likelihood) or U_sigma / chi_6^-1(1 - alpha)
    (conformal)."""
    from scipy.stats import chi

    rng = np.random.default_rng(1)
    P, alpha = 7, 0.2
    base = dict(
        energy=np.zeros(P),
        energy_ref=np.zeros(P),
        energy_uncertainty=np.ones(P),
        n_atoms=np.full(P, 2),
        forces=np.zeros((2 * P, 3)),
        forces_ref=np.zeros((2 * P, 3)),
        atom_uncertainty=np.ones(2 * P),
        numbers=np.full(2 * P, 29),
    )
    stress, stress_ref = rng.normal(size=(P, 6)), rng.normal(size=(P, 6))
    u = rng.uniform(0.5, 3.0, size=(P, 6))
    p = uq.Predictions(**base, stress=stress, stress_ref=stress_ref, stress_uncertainty=u)
    m = uq.error_metrics(p, method, alpha)
    d = stress - stress_ref
    full = np.array([[[a, f, e], [f, b, c], [e, c, g]] for a, b, g, c, e, f in d])
    assert m["n_stress_frames"] == P
    assert m["stress_rmse"] == pytest.approx(np.sqrt(np.mean(full**2)))
    assert m["stress_mae"] == pytest.approx(np.mean(np.abs(full)))
    r = np.linalg.norm(d, axis=1)
    u_s = np.sqrt((u**2).mean(axis=1))
    assert m["stress_coverage"] == pytest.approx(np.mean(r <= u_s))
    assert m["spearman_stress"] == pytest.approx(spearmanr(u_s, r)[0])
    s = u_s if method == "likelihood" else u_s / chi.ppf(1 - alpha, 6)
    nll = np.mean(0.5 * np.log(2 * np.pi * s**2) + r**2 / (2 * 6 * s**2))
    assert m["stress_nll"] == pytest.approx(nll)
    assert "stress_rmse" not in uq.error_metrics(uq.Predictions(**base))
    no_u = uq.Predictions(
        **base, stress=stress, stress_ref=stress_ref, stress_uncertainty=u * np.nan
    )
    assert "stress_coverage" not in uq.error_metrics(no_u) and "stress_rmse" in uq.error_metrics(
        no_u
    )
