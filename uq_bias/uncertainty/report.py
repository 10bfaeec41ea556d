"""The calibration report on disk: JSON and a reliability plot (PNG), both written atomically.

The plot has two panels: observed against expected coverage of the error distribution the
calibration implies (per-component Gaussian: |dE| half-normal, |dF_i| chi with 3 degrees of
freedom, the stress's Voigt-norm error chi with 6 when the frames have stress; see
:mod:`uq_bias.uncertainty.calibration`; the diagonal is perfect calibration), and
the error against the calibrated uncertainty on log axes (the line error = U).
"""

from __future__ import annotations

from pathlib import Path

from uq_bias.atomic import write_bytes
from uq_bias.atomic import write_json as write_json_atomic


def write_json(report: dict, path: str | Path) -> Path:
    """Write ``report`` as indented, strict JSON to ``path`` (NaN and inf become null)."""
    write_json_atomic(path, report)
    return Path(path)


def write_plot(report: dict, path: str | Path) -> Path:
    """Write the reliability plot of a :func:`~uq_bias.uncertainty.calibration.calibrate`
    report to ``path`` (PNG)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    ax_rel, ax_err = fig.subplots(1, 2)
    rel = report["reliability"]
    ax_rel.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="ideal")
    curves = [("energy", "energy"), ("forces", "per-atom forces"), ("stress", "stress")]
    for name, label in curves:
        if name not in rel:
            continue
        area = report[name]["calibrated"]["miscalibration_area"]
        ax_rel.plot(rel["expected"], rel[name], label=f"{label} (area {area:.3f})")
    ax_rel.set(xlabel="expected coverage", ylabel="observed coverage", title="reliability")
    ax_rel.legend(loc="upper left", fontsize=8)
    points = report["points"]
    atoms_label, structures_label = "atoms (eV/A)", "structures (eV)"
    ax_err.scatter(points["atom_uncertainty"], points["atom_error"], s=4, label=atoms_label)
    ax_err.scatter(
        points["energy_uncertainty"], points["energy_error"], s=12, label=structures_label
    )
    values = [v for v in points["atom_uncertainty"] + points["energy_uncertainty"] if v > 0]
    if values:
        low, high = min(values), max(values)
        ax_err.plot([low, high], [low, high], color="grey", lw=1, ls="--")
        ax_err.set_xscale("log")
        ax_err.set_yscale("log")
    ax_err.set(xlabel="calibrated uncertainty", ylabel="error", title="error vs uncertainty")
    ax_err.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{report['method']} calibration, alpha = {report['alpha']}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    path = Path(path)
    write_bytes(path, buffer.getvalue())
    return path
