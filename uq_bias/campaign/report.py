"""The campaign report: ``report/report.md`` and PNG plots, rebuilt from the folder's files.

Plots (matplotlib, Agg backend, written atomically):

* ``errors.png``: per iteration, the validation force RMSE, the force RMSE of the model on the
  batch it selected (frames it had not seen) and the mean predicted atom uncertainty there;
* ``calibration.png``: per-atom force error against calibrated uncertainty on the validation
  frames of the last model, with the line error = uncertainty;
* ``ramachandran.png``: phi/psi of every labelled frame, coloured by iteration (peptides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uq_bias.campaign import config as cfg
from uq_bias.campaign.state import CampaignState, atomic_path, read_json, write_text
from uq_bias.campaign.systems import backbone, dihedral


def _iterations(state: CampaignState) -> list[int]:
    folder = state.root / "iterations"
    if not folder.is_dir():
        return []
    found = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    return sorted(k for k in found if (folder / f"{k:03d}" / "metrics.json").is_file())


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)


def plot_errors(rows: list[dict], path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [r["iteration"] for r in rows]
    ax.plot(ks, [r["valid"]["forces_rmse"] for r in rows], "o-", label="validation force RMSE")
    batch = [(r["iteration"], r["batch"]) for r in rows if "batch" in r]
    if batch:
        ax.plot(
            [k for k, _ in batch],
            [b["forces_rmse"] for _, b in batch],
            "s-",
            label="force RMSE on the selected batch",
        )
        ax.plot(
            [k for k, _ in batch],
            [b["mean_atom_uncertainty"] for _, b in batch],
            "^--",
            label="mean atom uncertainty on the batch",
        )
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel("eV/A")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_calibration(predictions: dict, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4, 4))
    u = np.asarray(predictions["atom_uncertainty"])
    e = np.asarray(predictions["atom_error"])
    ax.scatter(u, e, s=4, alpha=0.5)
    positive = np.concatenate([u[u > 0], e[e > 0]])
    if positive.size:
        lo, hi = positive.min(), positive.max()
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="error = uncertainty")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("calibrated atom uncertainty (eV/A)")
    ax.set_ylabel("|F - F_ref| (eV/A)")
    ax.legend(fontsize=8)
    _save(fig, path)


def ramachandran(frames) -> np.ndarray | None:
    """(n, 3) phi, psi (degrees) and iteration of each frame, or None without a backbone."""
    if not frames:
        return None
    quads = backbone(frames[0])
    if quads is None:
        return None
    phi, psi = quads
    return np.array(
        [[dihedral(a, phi), dihedral(a, psi), a.info.get("iteration", 0)] for a in frames]
    )


def plot_ramachandran(angles: np.ndarray, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    points = ax.scatter(angles[:, 0], angles[:, 1], c=angles[:, 2], s=12, cmap="viridis")
    fig.colorbar(points, ax=ax, label="iteration", ticks=_integer_ticks())
    ax.set_xlim(-180, 180)
    ax.set_ylim(-180, 180)
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("psi (degrees)")
    ax.set_title("labelled frames")
    _save(fig, path)


def _table(rows: list[dict], state: CampaignState) -> list[str]:
    lines = [
        "| iteration | labelled | valid E RMSE (meV/atom) | valid F RMSE (eV/A) | coverage | "
        "Spearman | batch F RMSE (eV/A) | batch mean U (eV/A) | candidates | selected |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        k, v, b = r["iteration"], r["valid"], r.get("batch")
        selection = read_json(state.iteration_dir(k) / "selection.json", {})
        lines.append(
            f"| {k} | {r['n_labelled']} | {1000 * v['energy_rmse_per_atom']:.2f} | "
            f"{v['forces_rmse']:.4f} | {v['atom_coverage']:.2f} | {v['spearman_atom']:.2f} | "
            + (f"{b['forces_rmse']:.4f} | {b['mean_atom_uncertainty']:.4f} | " if b else "- | - | ")
            + f"{selection.get('n_candidates', '-')} | {len(selection.get('indices', [])) or '-'} |"
        )
    return lines


def _calibration_table(rows: list[dict], state: CampaignState) -> list[str]:
    """Per iteration: calibration factors and calibrated force metrics on the calibration
    frames (disjoint from the validation frames; see :mod:`uq_bias.campaign.roles`)."""
    lines = [
        "## Calibration per iteration (calibration frames)",
        "",
        "| iteration | energy factor | atom factor | force coverage | force NLL | "
        "miscalibration area |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        report = read_json(state.iteration_dir(r["iteration"]) / "calibration.json", {})
        if not report:
            continue
        forces = report["forces"]["calibrated"]
        lines.append(
            f"| {r['iteration']} | {report['factors']['energy']:.4g} | "
            f"{report['factors']['atom']:.4g} | {forces['coverage']:.2f} | {forces['nll']:.3g} | "
            f"{forces['miscalibration_area']:.3f} |"
        )
    return lines + [""]


def _learning_table(rows: list[dict]) -> list[str]:
    """Per labelled batch: errors of the model that picked it (before) and of the next model,
    trained with it (after). Equal errors mean the batch changed nothing."""
    pairs = [r["previous_batch"] for r in rows if "previous_batch" in r]
    if not pairs:
        return []
    lines = [
        "## Learning from each batch",
        "",
        "Errors on the frames labelled in iteration k, of model k (which picked them and had "
        "not seen them) and of model k + 1 (trained with them).",
        "",
        "| batch of iteration | frames | F RMSE before (eV/A) | F RMSE after (eV/A) | "
        "E RMSE before (meV/atom) | E RMSE after (meV/atom) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for p in pairs:
        b, a = p["before"], p["after"]
        lines.append(
            f"| {p['iteration']} | {a['n_frames']} | {b['forces_rmse']:.4f} | "
            f"{a['forces_rmse']:.4f} | {1000 * b['energy_rmse_per_atom']:.2f} | "
            f"{1000 * a['energy_rmse_per_atom']:.2f} |"
        )
    return lines + [""]


def _uncertainty(config: cfg.CampaignConfig) -> str:
    if config.model.ensemble > 1:
        return f"ensemble of {config.model.ensemble}"
    return f"{config.uncertainty.method} ({config.uncertainty.features} features)"


def _bias(bias) -> str:
    if bias.tau is not None:
        return "off (tau = 0)" if bias.tau == 0 else f"tau = {bias.tau}"
    return f"tau_rel = {bias.tau_rel} (window {bias.window})"


def write_report(state: CampaignState, config: cfg.CampaignConfig) -> Path:
    """Write ``report/report.md`` (and the plots) from the campaign folder; returns its path."""
    rows = [read_json(state.iteration_dir(k) / "metrics.json") for k in _iterations(state)]
    frames = state.labelled()
    failures = state.failures()
    journal = state.journal()
    status = f"finished: {journal.get('reason')}" if journal.get("finished") else "running"
    out = state.report_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Active-learning campaign report",
        "",
        f"- folder: `{state.root}`",
        f"- status: {status}",
        f"- labelled frames: {len(frames)} (oracle: {config.oracle.kind}); oracle failures: "
        f"{len(failures)}",
        f"- model: MACE {config.model.preset}, ensemble of {config.model.ensemble}; "
        f"uncertainty: {_uncertainty(config)}, {config.calibration.method} calibration",
        f"- exploration: {config.exploration.walkers} walkers x {config.exploration.steps} steps, "
        f"bias {_bias(config.exploration.bias)}; selection: "
        f"{config.selection.method}, {config.selection.batch_size} per iteration",
        "",
        "## Errors and uncertainty per iteration",
        "",
        *_table(rows, state),
        "",
    ]
    lines += _learning_table(rows)
    lines += _calibration_table(rows, state)
    if config.report.plots and rows:
        plot_errors(rows, out / "errors.png")
        lines += ["![errors and uncertainty per iteration](errors.png)", ""]
        last = read_json(state.iteration_dir(rows[-1]["iteration"]) / "predictions.json")
        if last and last["atom_error"]:
            plot_calibration(last, out / "calibration.png")
            lines += ["## Calibration", "", "![calibration](calibration.png)", ""]
    want = config.report.ramachandran
    angles = ramachandran(frames) if want is not False else None
    if config.report.plots and angles is not None and (want or _is_dipeptide(frames)):
        plot_ramachandran(angles, out / "ramachandran.png")
        lines += [
            "## Ramachandran plot of the labelled frames",
            "",
            "![Ramachandran](ramachandran.png)",
            "",
        ]
    if failures:
        lines += ["## Oracle failures", "", "| iteration | frame | reason |", "| --- | --- | --- |"]
        lines += [f"| {f['iteration']} | {f['frame_id']} | {f['reason']} |" for f in failures]
        lines.append("")
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def _is_dipeptide(frames) -> bool:
    return bool(frames) and frames[0].get_chemical_formula() == "C6H12N2O2"
