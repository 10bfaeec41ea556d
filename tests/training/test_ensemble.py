"""Deep ensembles: member 0 reproduces the CLI run with the same seed; members differ by seed."""

from __future__ import annotations

import csv

import numpy as np
import torch

from uq_bias.training import compute_statistics, read_frames, train_ensemble


def _state(path):
    return torch.load(path, weights_only=False).state_dict()


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_ensemble_members_share_data_and_differ_by_seed(trained, data_dir, tmp_path, fast_kwargs):
    paths = train_ensemble(
        data_dir / "train.extxyz", data_dir / "valid.extxyz", tmp_path, 2, **fast_kwargs
    )
    assert [p.name for p in paths] == ["member_0.model", "member_1.model"]
    # reproducibility: member 0 has seed 0 and the CLI's settings, so it is the CLI's model
    first, cli = _state(paths[0]), _state(trained)
    for name in cli:
        torch.testing.assert_close(first[name], cli[name], rtol=0, atol=0)
    assert _rows(tmp_path / "member_0_metrics.csv") == _rows(data_dir / "cli_metrics.csv")
    # another seed gives other weights, but the same cutoff, elements and E0 from the data
    second = _state(paths[1])
    assert any(not torch.equal(first[k], second[k]) for k in first if first[k].is_floating_point())
    models = [torch.load(p, weights_only=False) for p in paths]
    stats = compute_statistics(read_frames(data_dir / "train.extxyz"), fast_kwargs["cutoff"])
    expected_e0 = [stats.atomic_energies[z] for z in sorted(stats.atomic_energies)]
    for model in models:
        assert float(model.r_max) == fast_kwargs["cutoff"]
        assert model.atomic_numbers.tolist() == [13, 29]
        e0 = model.atomic_energies_fn.atomic_energies.reshape(-1).tolist()
        np.testing.assert_allclose(e0, expected_e0, rtol=0, atol=1e-12)
