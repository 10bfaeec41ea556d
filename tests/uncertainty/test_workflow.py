"""`uq-bias calibrate` end to end against the Python API on the same data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.io import write
from matplotlib.image import imread

from uq_bias.cli import main
from uq_bias.uncertainty import GradientFeatureUncertainty, calibrate, load
from uq_bias.uncertainty.workflow import PLOT_FILE, REPORT_FILE


def test_cli_calibrate_matches_python(cu_model, small_cu_frames, tmp_path, capsys):
    model_file = tmp_path / "cu.model"
    torch.save(cu_model, model_file)
    write(tmp_path / "train.xyz", small_cu_frames[:5])
    write(tmp_path / "valid.xyz", small_cu_frames[5:])
    out = tmp_path / "unc"
    argv = ["calibrate", "--model", str(model_file), "--train", str(tmp_path / "train.xyz")]
    argv += [
        "--valid",
        str(tmp_path / "valid.xyz"),
        "--out",
        str(out),
        "--calibration-alpha",
        "0.2",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "forces: coverage" in printed
    # 3 energies at alpha 0.2: the largest score, covering a 4th with probability 3/4 only
    assert "conformal energy factor comes from 3 validation value(s)" in printed
    assert "guarantees coverage 0.750, not 1 - alpha = 0.800" in printed
    assert "conformal forces factor" not in printed  # 24 atoms are enough
    report = json.loads((out / REPORT_FILE).read_text())
    reference = GradientFeatureUncertainty(cu_model).fit(small_cu_frames[:5])
    expected = calibrate(reference, small_cu_frames[5:], alpha=0.2)
    for name in ("energy", "atom"):
        assert report["factors"][name] == pytest.approx(expected["factors"][name], rel=1e-6)
    assert imread(out / PLOT_FILE).shape[:2] == (400, 900)
    loaded = load(out)  # the model file path is recorded
    graph = loaded.graph(small_cu_frames[7])
    np.testing.assert_allclose(
        loaded(graph).atom_uncertainty.detach(),
        reference(graph).atom_uncertainty.detach(),
        rtol=1e-6,
    )


def test_cli_calibrate_reads_labels_under_other_keys(cu_model, small_cu_frames, tmp_path):
    """Validation labels under MACE-style keys (REF_energy, REF_forces), named with --key-*:
    the factors equal the Python API's on the same frames (before, calibrate had no --key
    flags and said the frames held no labels)."""
    model_file = tmp_path / "cu.model"
    torch.save(cu_model, model_file)
    write(tmp_path / "train.xyz", small_cu_frames[:5])
    valid = []
    for atoms in small_cu_frames[5:]:
        frame = atoms.copy()  # no calculator: the labels only under REF_ keys
        frame.info["REF_energy"] = atoms.get_potential_energy()
        frame.arrays["REF_forces"] = atoms.get_forces()
        valid.append(frame)
    write(tmp_path / "valid.xyz", valid)
    out = tmp_path / "unc"
    argv = ["calibrate", "--model", str(model_file), "--train", str(tmp_path / "train.xyz")]
    argv += ["--valid", str(tmp_path / "valid.xyz"), "--out", str(out)]
    assert main(argv) == 2  # the default keys find no label
    assert main([*argv, "--key-energy", "REF_energy", "--key-forces", "REF_forces"]) == 0
    report = json.loads((out / REPORT_FILE).read_text())
    reference = GradientFeatureUncertainty(cu_model).fit(small_cu_frames[:5])
    expected = calibrate(reference, small_cu_frames[5:])
    for name in ("energy", "atom"):
        assert report["factors"][name] == pytest.approx(expected["factors"][name], rel=1e-6)


def test_cli_errors(cu_model, small_cu_frames, tmp_path, capsys):
    model_file = tmp_path / "cu.model"
    torch.save(cu_model, model_file)
    write(tmp_path / "one.xyz", small_cu_frames[:1])
    write(tmp_path / "valid.xyz", small_cu_frames[5:])
    base = ["calibrate", "--model", str(model_file), "--valid", str(tmp_path / "valid.xyz")]
    assert main(base + ["--train", str(tmp_path / "one.xyz"), "--out", str(tmp_path / "a")]) == 2
    assert "at least 2 training structures" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "b")]) == 2
    assert "needs training frames" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
