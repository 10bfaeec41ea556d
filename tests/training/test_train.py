"""`uq-bias train` end to end: errors go down, MACE loads the file, --init, seeds, bad input."""

from __future__ import annotations

import csv
import re

import ase.io
import numpy as np
import pytest
import torch

from uq_bias import Calculator, load_model
from uq_bias.cli import main
from uq_bias.training import save_model


def _rows(path):
    with open(path) as handle:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]


def _mace_force_rmse(model_path, frames):
    """Force RMSE of a model file on labelled frames, computed by MACE's own calculator."""
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(model_path), default_dtype="float64")
    errors = []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calc
        errors.append(atoms.get_forces() - frame.get_forces())
    return float(np.sqrt(np.mean(np.square(np.concatenate(errors)))))


def test_cli_training_lowers_validation_force_error(trained, data_dir, restore_default_dtype):
    rows = _rows(data_dir / "cli_metrics.csv")
    assert [row["epoch"] for row in rows] == list(range(len(rows)))
    assert len(rows) > 1 and "train_loss" in rows[1]
    valid = ase.io.read(data_dir / "valid.extxyz", ":")
    rmse = _mace_force_rmse(trained, valid)
    assert rmse < rows[0]["val_forces_rmse"]  # epoch 0 = before training
    best = min(rows, key=lambda row: row["val_loss"])  # the saved weights are the best epoch's
    np.testing.assert_allclose(rmse, best["val_forces_rmse"], rtol=1e-9)


def test_saved_file_loads_in_mace_calculator(trained, data_dir, restore_default_dtype):
    from mace.calculators import MACECalculator

    frame = ase.io.read(data_dir / "valid.extxyz", "0")
    ours, theirs = frame.copy(), frame.copy()
    ours.calc = Calculator(load_model(trained))
    theirs.calc = MACECalculator(model_paths=str(trained), default_dtype="float64")
    np.testing.assert_allclose(
        ours.get_potential_energy(), theirs.get_potential_energy(), rtol=0, atol=1e-10
    )
    np.testing.assert_allclose(ours.get_forces(), theirs.get_forces(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.get_stress(), theirs.get_stress(), rtol=0, atol=1e-10)


def test_init_with_zero_epochs_keeps_the_initial_model(
    trained, data_dir, fast_args, restore_default_dtype
):
    out = data_dir / "finetuned.model"
    assert main(fast_args(data_dir, out, "--init", str(trained), "--max-epochs", "0")) == 0
    before = torch.load(trained, weights_only=False).state_dict()
    after = torch.load(out, weights_only=False).state_dict()
    assert before.keys() == after.keys()
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    (row,) = _rows(data_dir / "finetuned_metrics.csv")  # only the validation before training
    valid = ase.io.read(data_dir / "valid.extxyz", ":")
    np.testing.assert_allclose(row["val_forces_rmse"], _mace_force_rmse(trained, valid), rtol=1e-9)


def _bad_frames(data_dir, tmp_path):
    frames = ase.io.read(data_dir / "train.extxyz", ":")
    no_energy = frames[2].copy()  # copy() drops the calculator: positions only
    no_energy.arrays["forces"] = frames[2].get_forces()
    ase.io.write(tmp_path / "no_energy.extxyz", frames[:2] + [no_energy])
    nickel = frames[0].copy()
    nickel.numbers[0] = 28
    nickel.calc = frames[0].calc
    ase.io.write(tmp_path / "nickel.extxyz", [nickel])
    (tmp_path / "not_a_model.model").write_text("hello")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--train": "no_energy.extxyz"}, r"no_energy\.extxyz, frame 2: no energy label"),
        ({"--train": "missing.extxyz"}, r"missing\.extxyz'? does not exist"),
        ({"--valid": "nickel.extxyz"}, r"validation data contains element\(s\) \['Ni'\]"),
        ({"--init": "not_a_model.model"}, r"not_a_model\.model'? is not a torch model file"),
    ],
)
def test_bad_input_is_named_and_writes_nothing(
    data_dir, tmp_path, fast_args, capsys, change, message
):
    _bad_frames(data_dir, tmp_path)
    out = tmp_path / "out.model"
    args = fast_args(data_dir, out)
    for flag, name in change.items():
        if flag in args:
            args[args.index(flag) + 1] = str(tmp_path / name)
        else:
            args += [flag, str(tmp_path / name)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists() and not (tmp_path / "out_metrics.csv").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_is_atomic(tmp_path):
    path = tmp_path / "model.model"
    save_model(torch.nn.Linear(2, 1), path)
    before = path.read_bytes()
    unpicklable = torch.nn.Linear(2, 1)
    unpicklable.hook = lambda x: x  # a lambda cannot be pickled: torch.save fails midway
    with pytest.raises(Exception, match="pickle|lambda"):
        save_model(unpicklable, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.model"]


def test_init_model_must_know_the_training_elements(trained, data_dir, tmp_path, fast_args, capsys):
    _bad_frames(data_dir, tmp_path)
    nickel = str(tmp_path / "nickel.extxyz")
    args = fast_args(data_dir, tmp_path / "out.model", "--init", str(trained))
    args[args.index("--train") + 1] = args[args.index("--valid") + 1] = nickel
    assert main(args) == 2
    assert "training data contains element(s) ['Ni'] that are not in the model" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out.model").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--key-energy", "REF_atomic"], r"frame 0: the energy 'REF_atomic' holds \d+ values"),
        (["--key-energy", "REF_text"], r"frame 0: the energy 'REF_text' is not a number"),
        (["--weight-decay", "-1"], r"--weight-decay: .*weight_decay must be a finite number >= 0"),
        (["--weights-energy", "0", "--weights-forces", "0"], "both 0"),
        (["--valid", "TRAIN"], r"3 of 3 validation frames are also training frames"),
    ],
    ids=["per-atom-energy", "text-energy", "weight-decay", "zero-weights", "valid-is-train"],
)
def test_bad_labels_and_options_are_named_before_training(
    data_dir, tmp_path, fast_args, capsys, extra, message
):
    """Before: per-atom energies trained on atom 0's energy, a text energy was an error naming
    no frame, zero loss weights trained nothing, and validation on training frames (which picks
    the best epoch and stops early) went unnoticed."""
    frames = ase.io.read(data_dir / "train.extxyz", ":")
    for frame in frames:
        frame.info["REF_text"] = "abc"
        frame.info["REF_atomic"] = np.full(len(frame), frame.get_potential_energy() / len(frame))
    train = tmp_path / "train.extxyz"
    ase.io.write(train, frames)
    out = tmp_path / "out.model"
    args = fast_args(data_dir, out)
    args[args.index("--train") + 1] = str(train)
    if extra[0] == "--valid":
        three = tmp_path / "three.extxyz"
        ase.io.write(three, frames[:3])
        args[args.index("--valid") + 1] = str(three)
    else:
        args += extra
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and not out.exists()


def test_diverged_training_saves_nothing(data_dir, tmp_path, fast_args, capsys):
    """lr 1e10: every trained epoch has a NaN validation loss. Before, the NaN weights of the
    last epoch were saved and the command exited 0."""
    out = tmp_path / "out.model"
    assert main(fast_args(data_dir, out, "--lr", "1e10")) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "learning rate in effect (1e+10: lr" in err
    assert not out.exists()


def test_broken_start_with_keep_initial_saves_nothing(data_dir, tmp_path, fast_kwargs):
    """keep_initial with a start model whose weights hold a NaN and lr 1e10: no epoch, the
    start included, has a finite validation loss. Before, the NaN weights were saved."""
    from dataclasses import replace

    from uq_bias.training import train
    from uq_bias.training.build import build_mace

    broken = build_mace([13, 29], cutoff=3.5, preset="tiny", seed=0)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    torch.save(broken, tmp_path / "broken.model")
    kwargs = dict(fast_kwargs)
    kwargs["options"] = replace(kwargs["options"], keep_initial=True, max_epochs=1, lr=1e10)
    with pytest.raises(ValueError, match="training diverged"):
        train(
            ase.io.read(data_dir / "train.extxyz", ":"),
            ase.io.read(data_dir / "valid.extxyz", ":"),
            tmp_path / "out.model",
            init=tmp_path / "broken.model",
            **kwargs,
        )
    assert not (tmp_path / "out.model").exists()


@pytest.mark.parametrize(
    "key, message",
    [
        ("REF_stress", r"frame 0 has atoms.info\['REF_stress'\].*--key-stress REF_stress"),
        ("REF_virial", r"frame 0 has atoms.info\['REF_virial'\].*-stress \* volume"),
    ],
)
def test_stress_under_an_unnamed_key_is_an_error(
    data_dir, tmp_path, fast_args, capsys, key, message
):
    """Periodic frames whose stress is in atoms.info under a key other than --key-stress: before,
    stress was silently left out of the loss. With the key named, training reads it."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = ase.io.read(data_dir / "train.extxyz", ":")
    for frame in frames:
        stress = frame.get_stress(voigt=True)
        results = {"energy": frame.get_potential_energy(), "forces": frame.get_forces()}
        frame.calc = SinglePointCalculator(frame, **results)
        frame.info["config_stress_weight"] = 1.0  # MACE's per-frame weight: not a stress
        frame.info["dielectric"] = np.eye(3)  # 9 numbers under another name: not a stress
        frame.info[key] = -stress * frame.get_volume() if "virial" in key else stress
    train = tmp_path / "train.extxyz"
    ase.io.write(train, frames)
    out = tmp_path / "out.model"
    args = fast_args(data_dir, out)
    args[args.index("--train") + 1] = str(train)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and not out.exists()
    if key == "REF_stress":
        assert main(args + ["--key-stress", key, "--max-epochs", "0"]) == 0
        assert main(args + ["--weights-stress", "0", "--max-epochs", "0"]) == 0
        for frame in frames:  # the weight and the dielectric tensor alone: no stress to find
            del frame.info[key]
        ase.io.write(train, frames)
        assert main(args + ["--max-epochs", "0"]) == 0
