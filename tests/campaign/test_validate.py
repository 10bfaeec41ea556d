"""Checks before the first label (issue 25): no reference call and no folder for a config that
would fail later; a folder without labels takes a corrected config; a conflict with labels says
what can be done; the console and the report count labels the same way."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from uq_bias.campaign import ConfigError, from_dict, run
from uq_bias.campaign.state import CampaignState, read_json, write_json
from uq_bias.campaign.validate import MARKER, check_folder, check_resume, first_frames
from uq_bias.cli import main

from .test_loop import FLAKY, check_labels_against, cu8, cu_labelled, write_campaign


@pytest.fixture
def reference_calls(monkeypatch) -> list:
    """Every EMT calculation made from now on (the oracle of these campaigns)."""
    calls = []
    original = EMT.calculate

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EMT, "calculate", counting)
    return calls


@pytest.mark.parametrize(
    "sections, key",
    [
        ({"data": {"initial_frames": 0}}, "data.initial_frames"),
        ({"model": {"file": "campaign.yaml"}}, "model.file"),
    ],
    ids=["initial_frames 0", "model file not a model"],
)
def test_fails_before_any_reference_call_and_leaves_no_folder(
    tmp_path, reference_calls, capsys, sections, key
):
    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, **sections)
    start = time.perf_counter()
    assert main(["run", str(path), "--quiet"]) == 2
    assert time.perf_counter() - start < 15
    assert key in capsys.readouterr().err
    assert reference_calls == []
    assert not (tmp_path / "campaign").exists()


def test_first_frames_are_the_ones_iteration_0_labels(tmp_path):
    path = write_campaign(tmp_path, cu8(), data={"initial_frames": 4}, stop={"iterations": 0})
    path.write_text(path.read_text().replace("max_epochs: 2", "max_epochs: 1"))
    result = run(path, progress=None)
    config = from_dict({"data": {"structures": "x.xyz", "initial_frames": 4}}, tmp_path)
    expected = sorted(a.info["frame_id"] for a in first_frames(config, [cu8()]))
    assert sorted(a.info["frame_id"] for a in CampaignState(result.folder).labelled()) == expected


def _config(tmp_path, **data):
    return from_dict({"data": {"structures": "x.xyz", **data}}, tmp_path)


def test_a_folder_without_labels_takes_a_corrected_config(tmp_path):
    state = CampaignState(tmp_path / "c")
    check_resume(state, _config(tmp_path, initial_frames=0))
    state.iteration_dir(0)  # a stage had started: its folder is stale now
    state.mark(0, "label")
    check_resume(state, _config(tmp_path, initial_frames=8))  # corrected: no error
    assert "initial_frames: 8" in (state.root / "config.yaml").read_text()
    assert not (state.root / "iterations").exists() and not state.done(0, "label")
    assert "starting over" in state.log_path.read_text()


def test_a_conflict_with_labels_says_what_can_be_done(tmp_path):
    state = CampaignState(tmp_path / "c")
    check_resume(state, _config(tmp_path, rattle=0.1))
    state.add_labelled(cu_labelled(3), 0)
    before = (state.root / "config.yaml").read_text()
    with pytest.raises(ConfigError) as info:
        check_resume(state, _config(tmp_path, rattle=0.2))
    message = str(info.value)
    assert "holds 3 labels" in message and "data.rattle: 0.1 -> 0.2" in message
    assert "may change on resume" in message and "'training'" in message
    assert "set 'folder' to a new name" in message
    assert f"data.initial_data: {state.data_path}" in message
    assert (state.root / "config.yaml").read_text() == before


@pytest.mark.parametrize(
    "config_yaml",
    [
        "seed: 123\nmodel: {num_channels: 64}\n",
        "- a list\n- not a mapping\n",
        "seed: 1\ndata: {structures: start.xyz}\noracle: {kind: emt}\nmodel: {preset: tiny}\n",
    ],
    ids=["another tool's config", "a yaml list", "a campaign yaml of the user's"],
)
def test_a_folder_of_the_users_own_is_refused_and_left_as_it_was(
    tmp_path, reference_calls, capsys, config_yaml
):
    """``folder: .`` in a project folder with its own config.yaml and data/: refused before any
    label, and not a byte of it changed (before, a changed 'seed' cleared data/ as stale)."""
    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"})
    path.write_text(path.read_text() + "folder: .\n")
    (tmp_path / "config.yaml").write_text(config_yaml)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.xyz").write_text("mine\n")
    before = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config key 'folder'" in err and "['config.yaml', 'data']" in err
    assert "Traceback" not in err and reference_calls == []
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == before


def test_a_campaign_folder_or_a_folder_without_campaign_names_is_accepted(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    check_folder(tmp_path)  # nothing a campaign writes is there
    check_resume(CampaignState(tmp_path / "c"), _config(tmp_path))
    check_folder(tmp_path / "c")  # a campaign's own folder, to resume
    (tmp_path / "c" / MARKER).unlink()  # a folder from before the marker: its log decides
    with pytest.raises(ConfigError, match="which no campaign wrote"):
        check_folder(tmp_path / "c")
    CampaignState(tmp_path / "c").log("campaign run in c")
    check_folder(tmp_path / "c")


def test_console_and_report_count_labels_the_same_way(tmp_path):
    """Iteration 1's model trained on 16 labels and then labelled 4 of 8 asked: the console says
    so, and the report's row 1 says 16 and 4 of 8 (not the 20 in the data after it)."""
    from uq_bias.campaign.console import iteration_line
    from uq_bias.campaign.report import _table

    state = CampaignState(tmp_path)
    state.add_labelled(cu_labelled(20), 0)
    valid = {"forces_rmse": 0.1, "energy_rmse_per_atom": 0.01, "atom_coverage": 0.9}
    metrics = {"iteration": 1, "n_labelled": 16, "valid": {**valid, "spearman_atom": 0.5}}
    write_json(state.iteration_dir(1) / "metrics.json", metrics)
    selection = {"n_candidates": 10, "n_asked": 8, "indices": [0, 1, 2, 3], "n_filled": 4}
    write_json(state.iteration_dir(1) / "selection.json", selection)
    line = iteration_line(state, 1, [])
    assert line.startswith("iteration 1 | trained on 16 labels |")
    assert "labelled 4 of 8 asked (the rest add nothing new), 20 labels now" in line
    row = _table([metrics], state)[2]
    assert row.startswith("| 1 | 16 |") and row.endswith("| 10 | 4 of 8 asked |")


def test_an_unwritable_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """Root may write anywhere, so the permission is taken away by stubbing os.access (new
    folder) and by a PermissionError while the folder is made (the CLI's last resort)."""
    import os

    import uq_bias.campaign.loop as loop

    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"})
    real_access = os.access
    with monkeypatch.context() as patch:
        patch.setattr(os, "access", lambda p, mode: p != tmp_path and real_access(p, mode))
        assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config key 'folder'" in err and "cannot be written" in err and str(tmp_path) in err

    def refuse(root):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(loop, "CampaignState", refuse)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and "campaign" in err
    assert "Traceback" not in err and not (tmp_path / "campaign").exists()


def test_gradient_features_need_two_training_frames_and_the_advice_is_enough(
    tmp_path, reference_calls, capsys
):
    """Three initial frames split 1/1/1 (seed 0): a deep ensemble can train on one, gradient
    features cannot fit on one. The check says so before any label, and the count it advises
    runs iteration 0 to its fitted, calibrated model."""
    import re

    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, data={"initial_frames": 3})
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training (2 needed, 1 given)" in err and reference_calls == []
    advised = int(re.search(r"initial_frames to (\d+) or more", err).group(1))
    path = write_campaign(tmp_path, cu8(), data={"initial_frames": advised}, stop={"iterations": 0})
    result = run(path, progress=None)
    fitted = CampaignState(result.folder).iteration_dir(1)
    assert (fitted / "uncertainty").is_dir() and (fitted / "calibration.json").is_file()


def test_an_oracle_that_fails_on_every_frame_names_oracle_and_a_fix_resumes(tmp_path, capsys):
    """A broken oracle is a setup error: exit 2 naming 'oracle' and the first reason. The
    failures are forgotten, so the same folder with the oracle corrected labels those frames
    (before, they counted as labels spent and the corrected oracle was refused)."""
    oracle = {"kind": "import", "calculator": f"{FLAKY}:FlakyEMT", "kwargs": {"fail_every": 1}}
    path = write_campaign(tmp_path, cu8(), oracle=oracle, stop={"iterations": 0})
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config key 'oracle'" in err and "failed on all 8 initial frames" in err
    assert "SCF did not converge" in err and "Traceback" not in err
    path.write_text(path.read_text().replace("fail_every: 1", "fail_every: 0"))
    assert main(["run", str(path), "--quiet"]) == 0
    state = CampaignState(tmp_path / "campaign")
    assert len(state.labelled()) == 8 and state.failures() == []
    check_labels_against(state.labelled(), EMT)


@pytest.mark.parametrize(
    "module, sections, names",
    [
        ("mace.modules", {}, ["config key 'model.file'", "uq_bias[mace]"]),
        ("distributed", {"executor": {"kind": "dask"}}, ["'executor.kind'", "uq_bias[dask]"]),
        ("rdkit", {"data": {"initial_frames": 8}}, ["'data.structures'", "uq_bias[chem]"]),
    ],
    ids=["mace-torch", "dask", "rdkit"],
)
def test_a_missing_extra_is_named_before_any_label(
    tmp_path, reference_calls, capsys, monkeypatch, module, sections, names
):
    """The import fails as it would without the extra (None in sys.modules); before, mace was
    first needed in training, after iteration 0's labels, and the CLI printed a traceback."""
    import sys

    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, **sections)
    if module == "rdkit":  # a built-in molecule is made by RDKit
        path.write_text(path.read_text().replace("start.xyz", "builtin:alanine_dipeptide"))
    monkeypatch.setitem(sys.modules, module, None)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in names) and "Traceback" not in err
    assert reference_calls == [] and not (tmp_path / "campaign").exists()


@pytest.mark.parametrize("engine", ["ase", "batched"])
def test_walkers_that_all_error_stop_the_campaign_and_a_fix_resumes(
    tmp_path, capsys, monkeypatch, engine
):
    """Every walker meets the same calculator error (injected: out of device memory). Before,
    the campaign retrained on the same data and went on; now it exits 2 naming the error, keeps
    iteration 0's labels and trained model, forgets the walks, and the rerun without the fault
    explores, labels and finishes in the same folder."""
    from uq_bias.calculator import Calculator
    from uq_bias.dynamics.batched import BatchedForces

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    target = (Calculator, "calculate") if engine == "ase" else (BatchedForces, "evaluate")
    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, exploration={"engine": engine})
    with monkeypatch.context() as patch:
        patch.setattr(*target, out_of_memory)
        assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "all 2 walkers stopped on an error from their calculator before keeping" in err
    assert "CUDA out of memory" in err
    assert "Traceback" not in err
    state = CampaignState(tmp_path / "campaign")
    first = state.iteration_dir(1)
    assert len(state.labelled()) == 8 and state.done(1, "train") and not state.done(1, "explore")
    assert not (first / "walkers").exists()
    assert main(["run", str(path), "--quiet"]) == 0
    assert state.done(1, "merge") and len(state.labelled()) == 8 + 3
    check_labels_against(state.labelled(), EMT)


def test_a_late_error_of_the_batched_engine_keeps_the_frames_before_it(tmp_path, monkeypatch):
    """The batched engine stops every walker of its batch on one error; frames kept before it
    are still candidates, so the iteration selects and labels from them instead of stopping."""
    from uq_bias.dynamics.batched import BatchedForces

    evaluate, calls = BatchedForces.evaluate, []

    def fails_late(self, frames):
        calls.append(len(frames))
        if len(calls) > 6:  # after steps 0-5: frames at steps 2 and 4 are kept
            raise RuntimeError("CUDA out of memory")
        return evaluate(self, frames)

    monkeypatch.setattr(BatchedForces, "evaluate", fails_late)
    batched = {"engine": "batched"}
    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, exploration=batched)
    result = run(path, progress=None)
    state = CampaignState(result.folder)
    walkers = [read_json(p) for p in sorted((state.iteration_dir(1) / "walkers").glob("*.json"))]
    assert {w["stop_reason"] for w in walkers} == {"error"} and sum(w["n_frames"] for w in walkers)
    assert len(state.labelled()) == 8 + 3


def test_too_few_initial_frames_after_failures_ask_for_more_and_keep_the_labels(tmp_path, capsys):
    """The oracle fails on 1 of 4 initial frames, and 3 leave one training frame where gradient
    features need two. Before, this surfaced after training as a fit error naming no key, and
    data.initial_frames could not change. Now: exit 2 naming the key before training; raising
    it resumes, keeps the 3 labels (their files are not rewritten) and labels only new frames."""
    oracle = {"kind": "import", "calculator": f"{FLAKY}:FlakyEMT", "kwargs": {"fail_every": 4}}
    path = write_campaign(
        tmp_path, cu8(), oracle=oracle, data={"initial_frames": 4}, stop={"iterations": 0}
    )
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config key 'data.initial_frames': the oracle failed on 1 of 4 initial frames" in err
    assert "training (2 needed, 1 given)" in err and "Raise data.initial_frames (to 6" in err
    state = CampaignState(tmp_path / "campaign")
    assert not state.done(0, "label") and state.labelled() == []
    kept = sorted((state.iteration_dir(0) / "labels").glob("*.extxyz"))
    stamps = {p.name: p.stat().st_mtime_ns for p in kept}
    assert len(kept) == 3
    path.write_text(path.read_text().replace("initial_frames: 4", "initial_frames: 6"))
    assert main(["run", str(path), "--quiet"]) == 0
    assert len(state.labelled()) == 5 and len(state.failures()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in kept} == stamps
    assert (state.iteration_dir(1) / "calibration.json").is_file()
    check_labels_against(state.labelled(), EMT)


def _fail_every_call(monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("licence server unreachable")

    monkeypatch.setattr(EMT, "calculate", broken)


def test_an_oracle_that_fails_on_every_selected_frame_stops_once_then_records(
    tmp_path, capsys, monkeypatch
):
    """Iteration 1's oracle fails on all 3 selected frames. Before, the campaign recorded them
    as failures for good, printed 'labelled 3 of 3' and went on. Now the first time is exit 2
    (failures forgotten: a rerun with the oracle working labels them); the second time in a
    row they are recorded and the campaign goes on, its console line counting them."""
    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, stop={"iterations": 0})
    assert main(["run", str(path), "--quiet"]) == 0
    path.write_text(path.read_text().replace("iterations: 0", "iterations: 1"))
    state = CampaignState(tmp_path / "campaign")
    with monkeypatch.context() as patch:
        _fail_every_call(patch)
        assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "iteration 1: the oracle failed on all 3 selected frames" in err
    assert "licence server unreachable" in err and "Traceback" not in err
    assert state.failures() == [] and state.done(1, "select") and not state.done(1, "label")
    assert main(["run", str(path), "--quiet"]) == 0
    assert len(state.labelled()) == 8 + 3 and state.failures() == []
    check_labels_against(state.labelled(), EMT)

    path.write_text(path.read_text().replace("iterations: 1", "iterations: 2"))
    with monkeypatch.context() as patch:
        _fail_every_call(patch)
        assert main(["run", str(path), "--quiet"]) == 2
        assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "labelled 0 of 3 selected (3 asked), the oracle failed on 3" in out
    assert len(state.labelled()) == 8 + 3 and len(state.failures()) == 3


def test_labels_paid_before_an_interrupt_are_kept_when_the_campaign_is_then_ended(
    tmp_path, monkeypatch, reference_calls
):
    """Ctrl-C while iteration 1 labels, after its first frame; then the user ends the campaign
    (stop.iterations 0). Before, the rerun stopped at once and the paid label never reached the
    data; now it does, and the oracle labels nothing more."""
    from uq_bias.interrupts import Interrupted

    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, stop={"iterations": 0})
    assert main(["run", str(path), "--quiet"]) == 0
    path.write_text(path.read_text().replace("iterations: 0", "iterations: 1"))
    calls, calculate = [], EMT.calculate

    def interrupted_on_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return calculate(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(EMT, "calculate", interrupted_on_the_second)
        with pytest.raises(Interrupted):
            run(path, progress=None)
    state = CampaignState(tmp_path / "campaign")
    assert len(list((state.iteration_dir(1) / "labels").glob("*.extxyz"))) == 1
    path.write_text(path.read_text().replace("iterations: 1", "iterations: 0"))
    before = len(reference_calls)
    run(path, progress=None)
    assert len(reference_calls) == before and len(state.labelled()) == 8 + 1
    check_labels_against(state.labelled(), EMT)


def _labelled(frames):
    """Frames labelled by EMT where it can, else by zeros (inputs only: no figure uses them)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for atoms in frames:
        atoms = atoms.copy()
        try:
            atoms.calc = EMT()
            results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        except NotImplementedError:
            results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3))}
        atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out


def _with_element(z: int):
    atoms = cu8()
    atoms.rattle(0.05, seed=z)
    atoms.numbers[0] = z
    return atoms


@pytest.mark.parametrize(
    "case, message",
    [
        ("test Al", "config key 'data.test': 'test.xyz' holds ['Al'], which no start structure"),
        ("head foo", "config key 'uncertainty.head': unknown head 'foo'"),
        ("ensemble of one file", "config key 'training.max_epochs': 0 leaves all 2 ensemble"),
        ("emt on initial_data Fe", "config key 'oracle.kind': emt has no parameters for ['Fe']"),
        ("cvs on initial_data", "(data.initial_data frame 0)"),
    ],
)
def test_what_failed_after_labels_now_fails_before(
    tmp_path, reference_calls, capsys, tiny_mace, case, message
):
    """Each of these failed only after iteration 0's labels and training (a test-set element
    the models never saw, an unknown head, an ensemble of one file trained 0 epochs, walkers
    started on Fe frames EMT cannot label, CVs indexing atoms an initial_data frame lacks)."""
    import ase.io
    import torch

    sections = {"oracle": {"kind": "emt"}}
    if case == "test Al":
        ase.io.write(tmp_path / "test.xyz", _labelled([_with_element(13)]))
        sections["data"] = {"test": "test.xyz"}
    elif case == "head foo":
        sections["uncertainty"] = {"head": "foo"}
    elif case == "ensemble of one file":
        torch.save(tiny_mace, tmp_path / "cu.model")
        sections["model"] = {"file": "cu.model", "ensemble": 2}
        sections["training"] = {"max_epochs": 0}
    elif case == "emt on initial_data Fe":
        ase.io.write(tmp_path / "fe.xyz", _labelled([_with_element(26)] * 3))
        sections["data"] = {"initial_data": "fe.xyz"}
    else:
        ase.io.write(tmp_path / "small.xyz", _labelled([bulk("Cu", "fcc", a=3.6, cubic=True)]))
        sections["data"] = {"initial_data": "small.xyz"}
        cv = {"name": "d07", "kind": "distance", "atoms": [0, 7], "range": [0, 10]}
        sections["report"] = {"cvs": [cv]}
    path = write_campaign(tmp_path, cu8(), **sections)
    made_inputs = len(reference_calls)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(reference_calls) == made_inputs and not (tmp_path / "campaign").exists()


def test_a_start_file_changed_under_a_campaign_with_labels_is_refused(tmp_path, capsys):
    """start.xyz rewritten with another lattice constant after iteration 0's labels. Before,
    the path matched and the campaign went on, mixing two systems in one data set."""
    import ase.io

    path = write_campaign(tmp_path, cu8(), oracle={"kind": "emt"}, stop={"iterations": 0})
    assert main(["run", str(path), "--quiet"]) == 0
    original = (tmp_path / "start.xyz").read_bytes()
    same = cu8()
    same.info["comment"] = "saved again"  # other bytes, the same structure: resumes
    ase.io.write(tmp_path / "start.xyz", same, format="extxyz")
    assert (tmp_path / "start.xyz").read_bytes() != original
    assert main(["run", str(path), "--quiet"]) == 0
    ase.io.write(tmp_path / "start.xyz", bulk("Cu", "fcc", a=3.75, cubic=True) * (2, 1, 1))
    path.write_text(path.read_text().replace("iterations: 0", "iterations: 1"))
    state = CampaignState(tmp_path / "campaign")
    journal = state.journal_path.read_bytes()
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config key 'data.structures': the frames of data.structures" in err
    assert "made its 8 labels" in err and "Traceback" not in err
    assert state.journal_path.read_bytes() == journal
    (tmp_path / "start.xyz").write_bytes(original)
    assert main(["run", str(path), "--quiet"]) == 0
    assert len(state.labelled()) == 8 + 3
