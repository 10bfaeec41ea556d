"""The calibration report on disk: strict JSON, a PNG, atomic writes."""

from __future__ import annotations

import json
import math

from matplotlib.image import imread

from uq_bias.uncertainty import GradientFeatureUncertainty, calibrate
from uq_bias.uncertainty.report import write_json, write_plot


def test_report_files(cu_model, small_cu_frames, tmp_path):
    model = GradientFeatureUncertainty(cu_model).fit(small_cu_frames[:5])
    report = calibrate(model, small_cu_frames[5:], method="likelihood")
    report["energy"]["raw"]["spearman"] = float("nan")  # e.g. constant uncertainties
    write_json(report, tmp_path / "report.json")
    back = json.loads((tmp_path / "report.json").read_text())  # strict JSON: no NaN
    assert back["energy"]["raw"]["spearman"] is None
    assert back["forces"]["calibrated"] == report["forces"]["calibrated"]
    # likelihood calibration: U_i is the std per force component, so mean(|dF_i|^2 / U_i^2) = 3
    # on the calibration set (and mean(dE^2 / U^2) = 1)
    points = back["points"]
    ratio = [(e / u) ** 2 for e, u in zip(points["atom_error"], points["atom_uncertainty"])]
    assert math.isclose(sum(ratio) / len(ratio), 3.0, rel_tol=1e-9)
    ratio = [(e / u) ** 2 for e, u in zip(points["energy_error"], points["energy_uncertainty"])]
    assert math.isclose(sum(ratio) / len(ratio), 1.0, rel_tol=1e-9)
    image = imread(write_plot(report, tmp_path / "plot.png"))
    assert image.shape[:2] == (400, 900)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "report.json"]
