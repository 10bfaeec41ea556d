"""The campaign report: ``report/report.md`` and PNG plots, rebuilt from the folder's files.

Plots (matplotlib, Agg backend, written atomically):

* ``errors.png``: per iteration, the validation force RMSE, the force RMSE of the model on the
  batch it selected (frames it had not seen) and the mean predicted atom uncertainty there;
* ``calibration.png``: per-atom force error against calibrated uncertainty on the validation
  frames of the last model, with the line error = uncertainty;
* ``coverage.png``: coverage of CV space (:mod:`uq_bias.campaign.explored`) by the explored and
  by the labelled frames against the number of labels;
* ``cv_map.png``: the first two CVs (phi/psi of a peptide: the Ramachandran plane) of every
  frame the walkers kept (grey) and of every labelled frame (coloured by iteration);
* ``learning_curve.png``: with ``data.test``, each iteration's force RMSE on the test frames
  against the number of labels (validation RMSE beside it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uq_bias.campaign import config as cfg
from uq_bias.campaign.cell_report import cell_section
from uq_bias.campaign.explored import campaign_cvs
from uq_bias.campaign.figures import integer_ticks as _integer_ticks
from uq_bias.campaign.figures import pyplot as _figure
from uq_bias.campaign.figures import save as _save
from uq_bias.campaign.state import CampaignState, read_json, write_text


def _iterations(state: CampaignState) -> list[int]:
    folder = state.root / "iterations"
    if not folder.is_dir():
        return []
    found = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    return sorted(k for k in found if (folder / f"{k:03d}" / "metrics.json").is_file())


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


def plot_coverage(rows: list, path: Path) -> None:
    """Coverage of CV space against labelled frames (rows: ``explored.CoverageRow``)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    seen = [(r.n_labelled, r.explored) for r in rows if r.explored is not None]
    if seen:
        ax.plot(*zip(*seen), "o-", label="explored frames (walkers, kept)")
    ax.plot([r.n_labelled for r in rows], [r.labelled for r in rows], "s--", label="labelled")
    ax.set_xlabel("labelled frames")
    ax.set_ylabel("coverage of CV space")
    ax.set_ylim(0, None)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_cv_map(explored: np.ndarray, labelled: np.ndarray, tags: np.ndarray, cvs, path: Path):
    """Explored (grey) and labelled (by iteration) frames on the first two CVs (or the first
    CV against the iteration when there is one)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    two = len(cvs) >= 2
    y_of = (lambda v, t: v[:, 1]) if two else (lambda v, t: t)
    if len(explored):
        steps = np.full(len(explored), np.nan)
        ax.scatter(explored[:, 0], y_of(explored, steps), s=3, c="0.7", label="explored (kept)")
    points = ax.scatter(labelled[:, 0], y_of(labelled, tags), c=tags, s=12, cmap="viridis")
    fig.colorbar(points, ax=ax, label="iteration labelled", ticks=_integer_ticks())
    ax.set_xlim(*cvs[0].box)
    ax.set_xlabel(_axis(cvs[0]))
    if two:
        ax.set_ylim(*cvs[1].box)
        ax.set_ylabel(_axis(cvs[1]))
    else:
        ax.set_ylabel("iteration")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("explored and labelled frames", fontsize=9)
    _save(fig, path)


def _axis(cv) -> str:
    return f"{cv.name} ({'degrees' if cv.kind == 'dihedral' else 'A'})"


def plot_learning_curve(rows: list[dict], path: Path) -> None:
    """Force RMSE on ``data.test`` (and on the validation split) against labelled frames."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    n = [r["n_labelled"] for r in rows]
    ax.plot(n, [r["test"]["forces_rmse"] for r in rows], "o-", label="test frames (data.test)")
    ax.plot(n, [r["valid"]["forces_rmse"] for r in rows], "s--", label="validation split")
    ax.set_xlabel("labelled frames")
    ax.set_ylabel("force RMSE (eV/A)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    _save(fig, path)


def _periodic(metrics: list[dict]) -> bool:
    """Whether any of these metrics has stress errors (periodic frames with stress labels)."""
    return any("stress_rmse" in m for m in metrics)


def _stress_cells(m: dict) -> str:
    """'stress RMSE (meV/A^3) | stress coverage | ' of metrics ``m`` (- where absent)."""
    rmse = "-" if "stress_rmse" not in m else f"{1000 * m['stress_rmse']:.2f}"
    coverage = "-" if "stress_coverage" not in m else f"{m['stress_coverage']:.2f}"
    return f"{rmse} | {coverage} | "


def _table(rows: list[dict], state: CampaignState) -> list[str]:
    """Errors per iteration; with periodic frames also the validation stress RMSE and the
    share of validation frames whose stress error the calibrated U_sigma covers."""
    from uq_bias.campaign.console import picked_of_asked

    stress = _periodic([r["valid"] for r in rows])
    extra = "valid stress RMSE (meV/A^3) | stress coverage | " if stress else ""
    lines = [
        "| iteration | trained on | valid E RMSE (meV/atom) | valid F RMSE (eV/A) | coverage | "
        f"Spearman | {extra}batch F RMSE (eV/A) | batch mean U (eV/A) | candidates | "
        "selected of asked |",
        "| --- " * (10 + 2 * stress) + "|",
    ]
    for r in rows:
        k, v, b = r["iteration"], r["valid"], r.get("batch")
        selection = read_json(state.iteration_dir(k) / "selection.json", {})
        lines.append(
            f"| {k} | {r['n_labelled']} | {1000 * v['energy_rmse_per_atom']:.2f} | "
            f"{v['forces_rmse']:.4f} | {v['atom_coverage']:.2f} | {v['spearman_atom']:.2f} | "
            + (_stress_cells(v) if stress else "")
            + (f"{b['forces_rmse']:.4f} | {b['mean_atom_uncertainty']:.4f} | " if b else "- | - | ")
            + f"{selection.get('n_candidates', '-')} | "
            + (f"{picked_of_asked(selection)} |" if selection else "- |")
        )
    return lines


def _calibration_table(rows: list[dict], state: CampaignState) -> list[str]:
    """Per iteration: calibration factors and calibrated force metrics on the calibration
    frames (disjoint from the validation frames; see :mod:`uq_bias.campaign.roles`); with a
    calibrated stress uncertainty also its factor and coverage there."""
    folders = [state.iteration_dir(r["iteration"]) for r in rows]
    reports = [read_json(folder / "calibration.json", {}) for folder in folders]
    stress = any("stress" in report for report in reports)
    extra = " stress factor | stress coverage |" if stress else ""
    lines = [
        "## Calibration per iteration (calibration frames)",
        "",
        "| iteration | energy factor | atom factor | force coverage | force NLL | "
        f"miscalibration area |{extra}",
        "| --- " * (6 + 2 * stress) + "|",
    ]
    for r, report in zip(rows, reports):
        if not report:
            continue
        forces = report["forces"]["calibrated"]
        cells = ""
        if stress and "stress" in report:
            cells = (
                f" {report['factors']['stress']:.4g} | "
                f"{report['stress']['calibrated']['coverage']:.2f} |"
            )
        elif stress:
            cells = " - | - |"
        lines.append(
            f"| {r['iteration']} | {report['factors']['energy']:.4g} | "
            f"{report['factors']['atom']:.4g} | {forces['coverage']:.2f} | {forces['nll']:.3g} | "
            f"{forces['miscalibration_area']:.3f} |{cells}"
        )
    return lines + [""]


def _coverage_section(state, config, rows, cvs, out: Path) -> list[str]:
    """Coverage of CV space per iteration, its plot and the CV map."""
    from uq_bias.campaign.explored import coverage_by_iteration, cv_values
    from uq_bias.campaign.stages import start_structures

    if not cvs:
        return []
    reference = start_structures(config)[0]
    table = coverage_by_iteration(state, cvs, [r["iteration"] for r in rows], reference)
    if not table:
        return []
    names = ", ".join(f"{cv.name} ({cv.kind} of atoms {list(cv.atoms)})" for cv in cvs)
    lines = [
        "## Coverage of CV space",
        "",
        f"CVs: {names}. Coverage is the mean over 2x2, 4x4, ... 32x32 grids of the CV box of "
        "the share of cells holding a frame (`uq_bias.campaign.coverage`; for more than two CVs "
        "the mean of that over all CV pairs). Row k is iteration "
        "k's model: *labelled* are the frames it was trained and validated on (labelled before "
        "iteration k), *explored* the frames the walkers kept before iteration k: one every "
        f"`exploration.sample_every` = {config.exploration.sample_every} MD steps plus the "
        "frame a walker stopped on, not every MD step. *Broken* explored frames are those in "
        "which a bond of the first start structure is over 1.5 times the sum of covalent radii "
        "long (the molecule has come apart); *coverage of explored* leaves them out, *all* "
        "counts them.",
        "",
        "| iteration | labelled frames | coverage of labelled | explored frames | broken | "
        "coverage of explored | all |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in table:
        lines.append(
            f"| {c.iteration} | {c.n_labelled} | {c.labelled:.3f} | {c.n_explored} | "
            f"{c.n_broken} | {_number(c.explored)} | {_number(c.explored_all)} |"
        )
    lines.append("")
    if config.report.plots:
        plot_coverage(table, out / "coverage.png")
        plot_cv_map(*cv_values(state, cvs, table[-1].iteration), cvs, out / "cv_map.png")
        lines += ["![coverage against labels](coverage.png)", "", "![CV map](cv_map.png)", ""]
    return lines


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _test_section(rows: list[dict], config: cfg.CampaignConfig, out: Path) -> list[str]:
    """Errors and calibration of every iteration's model on the ``data.test`` frames."""
    tested = [r for r in rows if "test" in r]
    if not tested:
        return []
    stress = _periodic([r["test"] for r in tested])
    extra = " stress RMSE (meV/A^3) | stress coverage |" if stress else ""
    lines = [
        "## Test set",
        "",
        f"{tested[0]['test']['n_frames']} frames of `data.test`, which no stage trains, "
        "early-stops or calibrates on."
        + (
            " Stress coverage: the share of periodic test frames whose stress error (Voigt "
            "norm) the calibrated stress uncertainty covers."
            if stress
            else ""
        ),
        "",
        "| iteration | labelled | E RMSE (meV/atom) | E MAE (meV/atom) | F RMSE (eV/A) | "
        f"F MAE (eV/A) | force coverage | energy coverage |{extra}",
        "| --- " * (8 + 2 * stress) + "|",
    ]
    for r in tested:
        t = r["test"]
        e_mae = t.get("energy_mae_per_atom")
        lines.append(
            f"| {r['iteration']} | {r['n_labelled']} | {1000 * t['energy_rmse_per_atom']:.2f} | "
            + ("-" if e_mae is None else f"{1000 * e_mae:.2f}")
            + f" | {t['forces_rmse']:.4f} | {t['forces_mae']:.4f} | {t['atom_coverage']:.2f} | "
            f"{t['energy_coverage']:.2f} |" + (" " + _stress_cells(t).rstrip() if stress else "")
        )
    lines.append("")
    if config.report.plots:
        plot_learning_curve(tested, out / "learning_curve.png")
        lines += ["![learning curve](learning_curve.png)", ""]
    return lines


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
    stress = {None: "", 0: ", stress bias off"}.get(
        bias.tau_rel_stress, f", stress tau_rel_stress = {bias.tau_rel_stress}"
    )
    if bias.tau is not None:
        return "off (tau = 0)" if bias.tau == 0 else f"tau = {bias.tau}{stress}"
    return f"tau_rel = {bias.tau_rel} (window {bias.window}){stress}"


def _walker_section(state: CampaignState, rows: list[dict]) -> list[str]:
    """Per iteration and walker: the stops it started again after, why it stopped, at which
    MD step, and its last tau."""
    from uq_bias.campaign.console import walker_summaries

    lines = [
        "## Walkers",
        "",
        "| iteration | walker | started again after | stop | step | final tau |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        for j, w in enumerate(walker_summaries(state, r["iteration"])):
            tau = "-" if w["tau"] is None else f"{float(w['tau']):.3g}"
            again = ", ".join(w["restarts"]) or "-"
            cells = [r["iteration"], j, again, w["reason"], w["step"], tau]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines + [""] if len(lines) > 4 else []


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
    lines += _test_section(rows, config, out)
    lines += _coverage_section(state, config, rows, campaign_cvs(config, frames), out)
    lines += cell_section(state, config, out)
    lines += _walker_section(state, rows)
    if failures:
        lines += ["## Oracle failures", "", "| iteration | frame | reason |", "| --- | --- | --- |"]
        lines += [f"| {f['iteration']} | {f['frame_id']} | {f['reason']} |" for f in failures]
        lines.append("")
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path
