"""End-to-end campaigns: EMT (process pool) and GFN2-xTB (local Dask cluster), a SIGKILL during
labelling and during training followed by a resume, and a typo that stops everything up front.

Every labelled frame is checked against the reference recomputed here at its positions, and
every label must be in the data exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from uq_bias.campaign import ConfigError, run
from uq_bias.campaign.state import CampaignState, read_frames, read_json

FLAKY = str(Path(__file__).with_name("flaky.py"))
TINY = {
    "model": {"preset": "tiny", "cutoff": 3.5},
    "training": {"max_epochs": 2, "batch_size": 4},
    "exploration": {
        "walkers": 2,
        "steps": 8,
        "sample_every": 2,
        "timestep": 1.0,
        "temperature": 800.0,
        "bias": {"tau_rel": 0.5, "window": 2},
    },
    "selection": {"batch_size": 3},
    "stop": {"iterations": 1},
}


def write_campaign(folder: Path, structures, **sections) -> Path:
    ase.io.write(folder / "start.xyz", structures)
    data = {name: dict(value) for name, value in TINY.items()}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    data.setdefault("data", {})["structures"] = "start.xyz"
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cu8():
    return bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)


def check_labels_against(frames, make_calc, atol=2e-6):
    """Every frame's stored energy and forces equal the reference recomputed at its positions."""
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = make_calc()
        assert frame.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=atol)
        np.testing.assert_allclose(frame.get_forces(), atoms.get_forces(), atol=1e-5)


def check_exactly_once(state: CampaignState) -> list[str]:
    """The data hold each labelled frame of every iteration once, and no failed frame."""
    ids = [a.info["frame_id"] for a in state.labelled()]
    assert len(ids) == len(set(ids))
    expected = []
    for folder in sorted((state.root / "iterations").iterdir()):
        expected += [a.info["frame_id"] for a in read_frames(folder / "labelled.extxyz")]
    assert sorted(ids) == sorted(set(expected))
    assert not {f["frame_id"] for f in state.failures()} & set(ids)
    return ids


@pytest.mark.slow
def test_emt_campaign_with_process_pool_skips_failing_frames(tmp_path):
    path = write_campaign(
        tmp_path,
        cu8(),
        data={"initial_frames": 8, "rattle": 0.1, "initial_data": "given.xyz"},
        oracle={
            "kind": "import",
            "calculator": f"{FLAKY}:FlakyEMT",
            "kwargs": {"fail_every": 3, "mode": "nan"},
        },
        executor={"kind": "process", "workers": 2},
    )
    ase.io.write(tmp_path / "given.xyz", cu_labelled(2))  # already labelled: taken as they are
    result = run(path, progress=None)
    state = CampaignState(result.folder)
    ids = check_exactly_once(state)
    check_labels_against(state.labelled(), EMT)
    # the frames the flaky oracle refuses are recorded with the reason, never in the data
    failed = state.failures()
    assert failed and all("non-finite forces" in f["reason"] for f in failed)
    n_selected = len(read_json(state.iteration_dir(1) / "selection.json")["indices"])
    assert len(ids) + len(failed) == 2 + 8 + n_selected
    assert "oracle failed on" in state.log_path.read_text()
    # selected frames came from the walkers' candidates
    pool = read_frames(state.iteration_dir(1) / "candidates.extxyz")
    candidates = {a.info["frame_id"] for a in pool}
    selected = read_json(state.iteration_dir(1) / "selection.json")["frame_ids"]
    assert set(selected) <= candidates and len(selected) == 3
    report = result.report.read_text()
    assert "| 1 |" in report and (result.report.parent / "errors.png").is_file()
    assert result.reason == "1 iterations done"


@pytest.mark.slow
def test_gfn2_campaign_on_local_dask_cluster(tmp_path):
    from tblite.ase import TBLite

    water = molecule("H2O")
    path = write_campaign(
        tmp_path,
        water,
        data={"initial_frames": 6, "rattle": 0.05},
        oracle={"kind": "gfn2-xtb"},
        executor={"kind": "dask", "workers": 2},
        exploration={"bias": {"tau": 0.5}},
        selection={"batch_size": 2},
    )
    result = run(path, progress=None)
    state = CampaignState(result.folder)
    ids = check_exactly_once(state)
    assert len(ids) == 6 + 2
    check_labels_against(state.labelled(), lambda: TBLite(method="GFN2-xTB", verbosity=0))
    metrics = read_json(state.iteration_dir(1) / "metrics.json")
    assert metrics["batch"]["n_frames"] == 2 and metrics["valid"]["forces_rmse"] > 0


def _wait(predicate, process, timeout=300.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if process.poll() is not None:
            raise AssertionError(f"the campaign ended (rc={process.returncode}) before the kill")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the campaign")


def _start(path: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "uq_bias.cli", "run", str(path), "--quiet"],
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=env,
    )


@pytest.mark.slow
def test_sigkill_during_labelling_and_training_then_resume(tmp_path):
    path = write_campaign(
        tmp_path,
        cu8(),
        data={"initial_frames": 8, "rattle": 0.1},
        oracle={
            "kind": "import",
            "calculator": f"{FLAKY}:FlakyEMT",
            "kwargs": {"fail_every": 3, "mode": "raise", "delay": 0.4},
        },
        stop={"iterations": 0},
        training={"max_epochs": 10},
    )
    folder = tmp_path / "campaign"
    state = CampaignState(folder)
    labels = folder / "iterations" / "000" / "labels"

    # 1. kill while the oracle labels the first frames
    process = _start(path, tmp_path / "run1.log")
    _wait(lambda: labels.is_dir() and len(list(labels.glob("0*"))) >= 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not state.done(0, "label")
    kept = len(list(labels.glob("0*")))
    assert 3 <= kept < 8

    # 2. resume, and kill again while the model trains
    process = _start(path, tmp_path / "run2.log")
    _wait(lambda: state.log_path.read_text().count("iteration 1: train ...") >= 1, process)
    time.sleep(0.5)  # in the stage: importing mace and Lightning alone takes longer
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.done(0, "merge") and not state.done(1, "train")

    # 3. resume in process, to the end
    result = run(path, progress=None)
    assert result.reason == "0 iterations done"
    ids = check_exactly_once(state)
    failed = {f["frame_id"] for f in state.failures()}
    assert len(ids) + len(failed) == 8
    assert all("SCF did not converge" in f["reason"] for f in state.failures())
    check_labels_against(state.labelled(), EMT)
    log = state.log_path.read_text()
    assert log.count("iteration 0: label done") == 1 and log.count("iteration 1: train done") == 1


def test_typo_fails_before_any_work(tmp_path):
    from uq_bias.cli import main

    path = write_campaign(tmp_path, cu8(), exploration={"stepz": 3})
    with pytest.raises(ConfigError, match="exploration.stepz"):
        run(path, progress=None)
    assert main(["run", str(path), "--quiet"]) == 2
    assert not (tmp_path / "campaign").exists()  # no folder, no work


def test_bad_oracle_path_fails_before_any_work(tmp_path):
    path = write_campaign(
        tmp_path, cu8(), oracle={"kind": "import", "calculator": "ase.calculators.emt:EMTT"}
    )
    with pytest.raises(ValueError, match="has no 'EMTT'"):
        run(path, progress=None)
    assert not (tmp_path / "campaign").exists()


def test_npt_for_a_molecule_fails_before_any_work(tmp_path):
    path = write_campaign(tmp_path, molecule("H2O"), exploration={"ensemble": "npt"})
    with pytest.raises(ConfigError, match="exploration.ensemble"):
        run(path, progress=None)
    assert not (tmp_path / "campaign").exists()


def test_torsional_bias_for_a_crystal_fails_before_any_work(tmp_path):
    bias = {"tau_rel": 0.1, "project": "torsions"}
    path = write_campaign(tmp_path, cu8(), exploration={"bias": bias})
    with pytest.raises(ConfigError, match="exploration.bias.project': torsions is for molecules"):
        run(path, progress=None)
    assert not (tmp_path / "campaign").exists()


def test_stop_rules(tmp_path):
    from uq_bias.campaign import from_dict
    from uq_bias.campaign.loop import stop_reason
    from uq_bias.campaign.state import write_json

    state = CampaignState(tmp_path)
    write_json(
        state.iteration_dir(2) / "metrics.json",
        {"valid": {"forces_rmse": 0.05, "energy_rmse_per_atom": 0.002}},
    )

    def reason(**stop):
        config = from_dict({"data": {"structures": "x.xyz"}, "stop": stop}, tmp_path)
        return stop_reason(state, config, 2)

    assert reason(iterations=5) is None
    assert reason(iterations=1) == "1 iterations done"  # k = 2 trained after 1 exploration
    assert reason(iterations=5, target_forces_rmse=0.1).startswith("target force RMSE")
    assert reason(iterations=5, target_forces_rmse=0.01) is None
    assert reason(iterations=5, target_energy_rmse=0.003).startswith("target energy RMSE")
    state.add_labelled(cu_labelled(3), 0)
    assert reason(iterations=5, label_budget=3) == "label budget reached (3 labelled frames)"
    assert reason(iterations=5, label_budget=4) is None


def cu_labelled(n: int):
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for k in range(n):
        atoms = cu8()
        atoms.rattle(0.05, seed=100 + k)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def test_resume_refuses_other_data_but_takes_new_training(tmp_path):
    from uq_bias.campaign import from_dict
    from uq_bias.campaign.loop import _check_resume

    state = CampaignState(tmp_path / "c")

    def config(**sections):
        return from_dict({"data": {"structures": "x.xyz"}, **sections}, tmp_path)

    _check_resume(state, config())
    _check_resume(state, config(training={"max_epochs": 7}, stop={"iterations": 9}))
    state.add_labelled(cu_labelled(2), 0)  # a folder without labels takes any config
    with pytest.raises(ConfigError, match=r"\['data.rattle'\]"):
        _check_resume(state, config(data={"structures": "x.xyz", "rattle": 0.2}))
    with pytest.raises(ConfigError, match=r"\['oracle.kwargs'\]"):
        _check_resume(state, config(oracle={"kwargs": {"asap_cutoff": True}}))


def test_rerunning_a_finished_campaign_changes_nothing(tmp_path):
    """A campaign stopped by its label budget after iteration 2, run again: nothing is trained
    or labelled again, and the result names the same last iteration and reason (it used to stop
    at iteration 1, where the budget, counted with every later label, looked reached)."""
    path = write_campaign(
        tmp_path,
        [cu8()],
        data={"initial_frames": 4, "rattle": 0.05},
        oracle={"kind": "emt"},
        executor={"kind": "inprocess"},
        stop={"iterations": 5, "label_budget": 10},
    )
    first = run(path, progress=None)
    assert (first.iterations, first.n_labelled) == (3, 10)
    journal = CampaignState(first.folder).log_path.read_text()
    lines = []
    again = run(path, progress=lines.append)
    assert (again.iterations, again.reason, again.n_labelled) == (3, first.reason, 10)
    assert lines == [
        f"campaign finished: {first.reason}; last model: iteration 3, trained on 10 labels "
        "(10 labelled in all)"
    ]
    assert "train ..." not in CampaignState(first.folder).log_path.read_text()[len(journal) :]
