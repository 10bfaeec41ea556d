"""Per-element energy offsets before fine-tuning: least squares against closed forms, and the
epoch-0 validation error of a model fine-tuned on labels of another reference."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from uq_bias.models import load_model
from uq_bias.training import FitOptions, TrainerOptions, train
from uq_bias.training.build import build_mace
from uq_bias.training.reference_energies import energy_offsets, shift_reference_energies

SHIFT = {29: 40.0, 13: -25.0}  # eV per atom: another reference method's zero of energy


def alloy_frames(n: int, seed: int, shift: dict[int, float] | None = None) -> list:
    """8-atom Cu cells with 0-3 Al atoms (compositions vary, so every offset is determined),
    rattled, labelled by EMT plus ``shift`` per atom of each element."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
        atoms.numbers[rng.choice(len(atoms), size=k % 4, replace=False)] = 13
        atoms.rattle(0.05, seed=seed + k)
        atoms.calc = EMT()
        energy = atoms.get_potential_energy()
        energy += sum(shift.get(int(z), 0.0) for z in atoms.numbers) if shift else 0.0
        forces = atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def model():
    return load_model(build_mace([13, 29], cutoff=3.5, preset="tiny", seed=0))


def test_offsets_follow_a_shift_of_the_labels(model):
    """Least squares is linear: labels shifted by c_z per atom of element z move the fitted
    offsets by exactly c_z when the compositions determine them."""
    plain = energy_offsets(model, alloy_frames(8, seed=1))
    shifted = energy_offsets(model, alloy_frames(8, seed=1, shift=SHIFT))
    for z, c in SHIFT.items():
        assert shifted[z] - plain[z] == pytest.approx(c, abs=1e-8)


def test_shift_changes_each_energy_by_its_composition(model):
    """After the shift each energy is higher by sum_z n_z c_z (MACE's E0 enters linearly)."""
    frames = alloy_frames(4, seed=2)
    before = model(model.graph(frames)).energy.detach().double().numpy()
    shifted = load_model(build_mace([13, 29], cutoff=3.5, preset="tiny", seed=0))
    assert shift_reference_energies(shifted, SHIFT)
    after = shifted(shifted.graph(frames)).energy.detach().double().numpy()
    expected = [sum(SHIFT[int(z)] for z in a.numbers) for a in frames]
    np.testing.assert_allclose(after - before, expected, atol=1e-8)


def _epoch0_energy_rmse(tmp_path, name, train_frames, valid_frames, refit: bool) -> float:
    # one epoch: with 0 the model is returned as given; row 0 is the start, before training
    options = FitOptions(max_epochs=1, batch_size=4, refit_reference_energies=refit)
    log = tmp_path / f"{name}.csv"
    train(
        train_frames,
        valid_frames,
        tmp_path / f"{name}.model",
        init=tmp_path / "start.model",
        options=options,
        trainer_options=TrainerOptions(accelerator="cpu", progress_bar=False),
        log=log,
    )
    with open(log) as handle:
        row = next(csv.DictReader(handle))
    assert row["epoch"] == "0"
    return float(row["val_energy_rmse"])


def test_fine_tuning_on_another_reference_starts_where_the_same_reference_does(tmp_path):
    """Labels of a reference with other per-element zeros (SHIFT): with the refit the starting
    model's validation energy error equals the one on the unshifted labels (the offsets absorb
    the shift); without it, it is the shift itself (tens of eV/atom)."""
    torch.save(build_mace([13, 29], cutoff=3.5, preset="tiny", seed=0), tmp_path / "start.model")
    same = alloy_frames(8, seed=3), alloy_frames(3, seed=30)
    other = alloy_frames(8, seed=3, shift=SHIFT), alloy_frames(3, seed=30, shift=SHIFT)
    reference = _epoch0_energy_rmse(tmp_path, "same", *same, refit=True)
    refitted = _epoch0_energy_rmse(tmp_path, "other", *other, refit=True)
    unfitted = _epoch0_energy_rmse(tmp_path, "other_off", *other, refit=False)
    assert refitted == pytest.approx(reference, rel=1e-6, abs=1e-9)
    assert unfitted > 20.0 > 100 * refitted


def test_cli_says_what_it_shifted(data_dir, tmp_path, fast_args, capsys):
    """`uq-bias train --init` names the shift of each element on stderr (the Python API logs
    it); --no-refit-reference-energies says nothing and leaves E0 alone."""
    from uq_bias.cli import main

    start = build_mace([13, 29], cutoff=3.5, preset="tiny", seed=0)
    torch.save(start, tmp_path / "start.model")
    init = ["--init", str(tmp_path / "start.model"), "--max-epochs", "1"]
    assert main(fast_args(data_dir, tmp_path / "a.model", *init)) == 0
    err = capsys.readouterr().err
    assert "uq-bias: fine-tuning: isolated-atom energies shifted by Al " in err and " eV" in err
    off = [*init, "--no-refit-reference-energies"]
    assert main(fast_args(data_dir, tmp_path / "b.model", *off)) == 0
    assert "isolated-atom energies" not in capsys.readouterr().err
