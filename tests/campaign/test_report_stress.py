"""The campaign report's stress columns for periodic frames: the validation and test stress RMSE
and coverage, and the stress calibration factor, from metrics made by the campaign's own
functions on EMT-labelled Cu/Al cells and checked against each member's stress recomputed here."""

from __future__ import annotations

import numpy as np
import pytest

from uq_bias.calculator import Calculator
from uq_bias.campaign import config as cfg
from uq_bias.campaign import report, uq
from uq_bias.campaign.state import CampaignState, write_json
from uq_bias.uncertainty.calibration import calibrate
from uq_bias.uncertainty.ensemble import Ensemble


def _row(cells: list[str], header: str, line: str) -> str:
    """The cell of column ``header`` in the table row ``line`` whose header row is ``cells``."""
    return [c.strip() for c in line.strip("|").split("|")][cells.index(header)]


def test_report_tables_show_stress_errors_and_coverage(fitted_ensemble, tmp_path):
    from reference_data import rattled_cu_frames

    model = Ensemble(list(fitted_ensemble.members))
    calibration = calibrate(model, rattled_cu_frames(12, seed=51, size=(2, 1, 1), amplitude=0.1))
    test = rattled_cu_frames(10, seed=52, size=(2, 1, 1), amplitude=0.1)
    metrics = uq.error_metrics(uq.predict(model, test), "conformal", 0.1)
    errors, covered = [], []
    for atoms in test:  # the stress error and U_sigma of each frame, member by member
        members = []
        for member in model.members:
            probe = atoms.copy()
            probe.calc = Calculator(member)
            members.append(probe.get_stress())
        d = np.mean(members, axis=0) - atoms.get_stress()
        errors.append(np.r_[d, d[3:]])  # the 9 components of the symmetric 3x3 error
        u = calibration["factors"]["stress"] * np.std(members, axis=0)
        covered.append(np.linalg.norm(d) <= np.sqrt(np.mean(u**2)))
    assert metrics["stress_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(errors))))
    assert metrics["stress_coverage"] == pytest.approx(np.mean(covered))

    state = CampaignState(tmp_path / "c")
    folder = state.iteration_dir(1)
    folder.mkdir(parents=True, exist_ok=True)
    row = {"iteration": 1, "n_labelled": 12, "valid": metrics, "test": metrics}
    write_json(folder / "metrics.json", row)
    write_json(folder / "calibration.json", calibration)
    config = cfg.from_dict({"data": {"structures": "x.xyz"}, "report": {"plots": False}})
    lines = report._table([row], state)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert len(lines[1].split("|")) == len(lines[0].split("|"))
    assert _row(header, "valid stress RMSE (meV/A^3)", lines[2]) == (
        f"{1000 * metrics['stress_rmse']:.2f}"
    )
    assert _row(header, "stress coverage", lines[2]) == f"{np.mean(covered):.2f}"
    lines = report._calibration_table([row], state)
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert _row(header, "stress factor", lines[4]) == f"{calibration['factors']['stress']:.4g}"
    lines = report._test_section([row], config, tmp_path)
    table = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert _row(header, "stress RMSE (meV/A^3)", table[2]) == f"{1000 * metrics['stress_rmse']:.2f}"
    assert _row(header, "stress coverage", table[2]) == f"{np.mean(covered):.2f}"


def test_molecule_tables_have_no_stress_columns(tmp_path):
    """Without periodic frames the tables are as before: no stress columns."""
    state = CampaignState(tmp_path / "c")
    state.iteration_dir(1).mkdir(parents=True, exist_ok=True)
    valid = {
        "energy_rmse_per_atom": 0.01,
        "forces_rmse": 0.1,
        "atom_coverage": 0.9,
        "spearman_atom": 0.5,
    }
    lines = report._table([{"iteration": 1, "n_labelled": 3, "valid": valid}], state)
    assert "stress" not in lines[0] and lines[1].count("---") == 10
