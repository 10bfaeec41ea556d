"""Every bad input a user can give gets exit status 2, one message naming the file, key or flag,
no traceback, and nothing written (issue 25).

One table of cases across ``run``, ``md``, ``calibrate``, ``select``, ``train``, ``demo`` and the
Python API, all against one shared folder of inputs. Each case runs ``uq_bias.cli.main``
in-process (the Python API cases call the function and check the exception) and compares a
snapshot of the folder (every path, size and modification time) before and after, so a
campaign folder or an output file that appears, or an input that changes, fails the case.
Set ``UQ_BIAS_SHOW_OUTPUT=1`` (with ``-s``) to print every case's output, e.g. to count
``Traceback`` in it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from uq_bias.cli import main

NO_STRESS = Path(__file__).parent / "campaign" / "flaky.py"
CAMPAIGN = {
    "data": {"structures": "start.xyz", "initial_frames": 4},
    "oracle": {"kind": "emt"},
    "model": {"preset": "tiny", "cutoff": 3.5},
    "training": {"max_epochs": 1},
    "stop": {"iterations": 0},
}


def cu8():
    return bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)


def labelled_cu(n: int, seed: int) -> list:
    frames = []
    for k in range(n):
        atoms = cu8()
        atoms.rattle(0.05, seed=seed + k)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, _tiny_mace_template) -> Path:
    """One folder of good and bad inputs that every case uses (and none may change)."""
    root = tmp_path_factory.mktemp("inputs")
    ase.io.write(root / "start.xyz", cu8())
    fe = cu8()
    fe.numbers[:] = 26
    ase.io.write(root / "iron.xyz", fe)
    ase.io.write(root / "labelled.xyz", labelled_cu(4, 10))
    ase.io.write(root / "held_out.xyz", labelled_cu(4, 20))
    twice = cu8()
    ase.io.write(root / "twice.xyz", twice + twice[3:4])  # atom 3 again (a CIF expanded twice)
    nm = cu8()
    nm.set_cell(nm.cell / 10)  # a cell in nm, positions in A
    ase.io.write(root / "nm_cell.xyz", nm)
    (root / "garbage.xyz").write_text("hello world\nthis is not a structure\n")
    (root / "empty.xyz").write_text("")
    (root / "thing.foo").write_text("x 0 0 0\n")
    (root / "binary.xyz").write_bytes(bytes(range(256)) * 8)
    (root / "afolder.xyz").mkdir()
    (root / "afile").write_text("not a folder\n")
    (root / "notmodel.model").write_text("this is not a model\n")
    torch.save(torch.zeros(3), root / "tensor.model")
    torch.save(_tiny_mace_template, root / "tiny.model")
    np.save(root / "features.npy", np.eye(4))
    torch.save(np.eye(4), root / "numpy_features.pt")  # not a tensor: refused by weights_only
    torch.save(torch.ones(4), root / "flat_features.pt")
    (root / "junk.pt").write_text("hello\n")
    (root / "junk.npy").write_text("hello\n")
    (root / "campaigns").mkdir()
    (root / "list.yaml").write_text("- data\n- oracle\n")
    (root / "bad.yaml").write_text("data: {structures: [\n")
    ase.io.write(root / "walk_w1.xyz", cu8())  # what walker 1 of `md --out walk.xyz` writes
    for name, key in (("nan_energy.xyz", "energy"), ("nan_forces.xyz", "forces")):
        frames = labelled_cu(4, 30)
        if key == "energy":
            frames[2].calc.results["energy"] = float("nan")
        else:
            frames[2].calc.results["forces"][5, 1] = float("nan")
        ase.io.write(root / name, frames)
    mixed = labelled_cu(4, 40)
    mixed[2].numbers[:] = 26  # frame 2 of the file: iron, which tiny.model does not know
    ase.io.write(root / "iron_frame2.xyz", mixed)
    return root


def campaign(inputs: Path, name: str, **sections) -> str:
    """A campaign YAML in ``inputs`` with ``sections`` merged into :data:`CAMPAIGN`."""
    data = {key: dict(value) for key, value in CAMPAIGN.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = inputs / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of everything under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        out[str(path.relative_to(root))] = (
            stat.st_size if path.is_file() else -1,
            stat.st_mtime_ns,
        )
    return out


@dataclass
class Case:
    """A bad input: the argv (built from the inputs folder; writing a campaign YAML there is part
    of building it), what the message must name, and for a Python API case the call (given the
    folder and the argv), which must raise what the CLI turns into exit status 2."""

    name: str
    argv: Callable[[Path], list[str]]
    names: str
    api: Callable[[Path, list[str]], object] | None = field(default=None)


def run_case(name: str, **sections) -> Callable[[Path], list[str]]:
    """argv of ``uq-bias run`` on a campaign with ``sections`` changed; the YAML is written
    when the table is built, so only the run itself is watched."""
    return lambda root: ["run", campaign(root, name, folder=f"campaigns/{name}", **sections)]


def data(**keys):
    return {"data": {**CAMPAIGN["data"], **keys}}


RUN = [
    Case("structures garbage", run_case("s1", **data(structures="garbage.xyz")), "garbage.xyz"),
    Case("structures empty", run_case("s2", **data(structures="empty.xyz")), "empty.xyz"),
    Case("structures unknown ext", run_case("s3", **data(structures="thing.foo")), "thing.foo"),
    Case("structures binary", run_case("s4", **data(structures="binary.xyz")), "binary.xyz"),
    Case("structures folder", run_case("s5", **data(structures="afolder.xyz")), "afolder"),
    Case("structures missing", run_case("s6", **data(structures="nope.xyz")), "nope.xyz"),
    Case(
        "structures atom twice",
        run_case("s7", **data(structures="twice.xyz")),
        "frame 0: atoms 3 (Cu) and 8 (Cu) are 0.000 A apart",
    ),
    Case(
        "structures cell in nm",
        run_case("s8", **data(structures="nm_cell.xyz")),
        "A apart across the cell boundary",
    ),
    Case("initial_frames 0", run_case("n0", **data(initial_frames=0)), "data.initial_frames"),
    Case("initial_frames 2", run_case("n2", **data(initial_frames=2)), "data.initial_frames"),
    Case("initial_frames -1", run_case("n3", **data(initial_frames=-1)), "initial_frames"),
    Case("model not a model", run_case("m1", model={"file": "notmodel.model"}), "model.file"),
    Case("model a tensor", run_case("m2", model={"file": "tensor.model"}), "model.file"),
    Case("model missing", run_case("m3", model={"file": "gone.model"}), "gone.model"),
    Case(
        "model lacks Fe",
        run_case("m4", model={"file": "tiny.model"}, **data(structures="iron.xyz")),
        "model.file",
    ),
    Case("emt lacks Fe", run_case("o1", **data(structures="iron.xyz")), "oracle.kind"),
    Case(
        "oracle import typo",
        run_case("o2", oracle={"kind": "import", "calculator": "ase.calculators.emt:EMTT"}),
        "EMTT",
    ),
    Case(
        "oracle kwargs typo",
        run_case("o3", oracle={"kind": "emt", "kwargs": {"asap_cutof": True}}),
        "oracle.kwargs.asap_cutof is not a parameter of emt (did you mean 'asap_cutoff'?)",
    ),
    Case(
        "npt, oracle without stress",
        run_case(
            "o4",
            oracle={"kind": "import", "calculator": f"{NO_STRESS}:NoStressEMT"},
            exploration={"ensemble": "npt"},
        ),
        "exploration.ensemble npt moves the cell by the model's stress, and the oracle",
    ),
    Case(
        "initial_data garbage",
        run_case("d1", **data(initial_data="garbage.xyz")),
        "data.initial_data",
    ),
    Case(
        "initial_data unlabelled",
        run_case("d2", **data(initial_data="start.xyz")),
        "data.initial_data",
    ),
    Case("test set missing", run_case("d3", **data(test="none.xyz")), "data.test"),
    Case("key typo", run_case("k1", exploration={"stepz": 3}), "exploration.stepz"),
    Case("wrong type", run_case("k2", selection={"batch_size": "eight"}), "selection.batch_size"),
    Case("batch_size 0", run_case("k3", selection={"batch_size": 0}), "batch_size"),
    Case("walkers 0", run_case("k4", exploration={"walkers": 0}), "walkers"),
    Case("iterations -1", run_case("k5", stop={"iterations": -1}), "iterations"),
    Case(
        "trainer 64 gpus", run_case("g1", trainer={"accelerator": "gpu", "devices": 64}), "trainer"
    ),
    Case("device cuda:99", run_case("g2", device="cuda:99"), "config key 'device'"),
    Case("bias weight for H", run_case("b1", exploration={"bias": {"weights": {"H": 0}}}), "'H'"),
    Case(
        "closed_form, one model",
        run_case("b2", exploration={"bias": {"gradient": "closed_form"}}),
        "exploration.bias.gradient",
    ),
    Case("budget below initial", run_case("k6", stop={"label_budget": 3}), "stop.label_budget"),
    Case("target rmse 0", run_case("k7", stop={"target_forces_rmse": 0}), "target_forces_rmse"),
    Case("folder is a file", lambda root: ["run", campaign(root, "f1", folder="afile")], "folder"),
    Case(
        "folder under a file",
        lambda root: ["run", campaign(root, "f2", folder="afile/c")],
        "folder",
    ),
    Case("campaign file a folder", lambda root: ["run", str(root / "campaigns")], "campaigns"),
    Case("campaign file missing", lambda root: ["run", str(root / "missing.yaml")], "missing.yaml"),
    Case("campaign file a list", lambda root: ["run", str(root / "list.yaml")], "list.yaml"),
    Case("campaign file bad YAML", lambda root: ["run", str(root / "bad.yaml")], "bad.yaml"),
    Case("campaign file binary", lambda root: ["run", str(root / "binary.xyz")], "binary.xyz"),
    Case("run flag typo", lambda root: ["run", campaign(root, "t1"), "--quite"], "--quiet"),
]


def md(root: Path, *extra: str) -> list[str]:
    out = str(root / "md_out.extxyz")
    return ["md", "--unc", str(root / "campaigns"), "--out", out, *extra]


MD = [
    Case("md start garbage", lambda r: md(r, "--start", str(r / "garbage.xyz")), "garbage.xyz"),
    Case("md start empty", lambda r: md(r, "--start", str(r / "empty.xyz")), "empty.xyz"),
    Case("md start binary", lambda r: md(r, "--start", str(r / "binary.xyz")), "binary.xyz"),
    Case("md start atom twice", lambda r: md(r, "--start", str(r / "twice.xyz")), "0.000 A apart"),
    Case("md start missing", lambda r: md(r, "--start", str(r / "gone.xyz")), "gone.xyz"),
    Case("md flag typo", lambda r: md(r, "--start", "x", "--temprature", "3"), "--temperature"),
    Case("md steps -5", lambda r: md(r, "--start", str(r / "start.xyz"), "--steps", "-5"), "steps"),
    Case(
        "md out is the start file",
        lambda r: md(r, "--start", str(r / "start.xyz"), "--out", str(r / "start.xyz")),
        "start.xyz' is the start structures file (--start); writing the frames there would "
        "replace your start structures: give another file name",
    ),
    Case(
        "md walker file is the start file",
        lambda r: md(
            r, "--start", str(r / "walk_w1.xyz"), "--out", str(r / "walk.xyz"), "--walkers", "2"
        ),
        "--out (walker 1) '",
    ),
    Case(
        "md out .traj",
        lambda r: md(r, "--start", str(r / "start.xyz"), "--out", str(r / "run.traj")),
        "run.traj': frames are written as extended XYZ, so the name must end in .xyz or .extxyz",
    ),
    Case(
        "md out under a file",
        lambda r: md(r, "--start", str(r / "start.xyz"), "--out", str(r / "afile" / "t.xyz")),
        "afile' is a file, not a folder",
    ),
    Case(
        "md sample-every above steps",
        lambda r: md(r, "--start", str(r / "start.xyz"), "--steps", "2", "--sample-every", "5"),
        "--sample-every 5 is more than --steps 2",
    ),
]


def calibrate(root: Path, *extra: str) -> list[str]:
    return ["calibrate", "--out", str(root / "cal_out"), *extra]


def calibrate_tiny(root: Path, valid: str, out: str, train: str = "garbage.xyz") -> list[str]:
    """A training file that cannot be read: the checks of --valid and --out must come first."""
    model, train = str(root / "tiny.model"), str(root / train)
    argv = ["--model", model, "--train", train, "--valid", str(root / valid)]
    return ["calibrate", "--out", str(root / out), *argv]


CALIBRATE = [
    Case(
        "calibrate valid unlabelled",
        lambda r: calibrate_tiny(r, "start.xyz", "cal_out"),
        "calibration frame 0 has no energy and forces labels",
    ),
    Case(
        "calibrate out a file",
        lambda r: calibrate_tiny(r, "labelled.xyz", "afile"),
        "afile' is a file; give a folder",
    ),
    Case(
        "calibrate valid garbage",
        lambda r: calibrate(r, "--model", str(r / "tiny.model"), "--valid", str(r / "garbage.xyz")),
        "garbage.xyz",
    ),
    Case(
        "calibrate valid binary",
        lambda r: calibrate(r, "--model", str(r / "tiny.model"), "--valid", str(r / "binary.xyz")),
        "binary.xyz",
    ),
    Case(
        "calibrate model not a model",
        lambda r: calibrate(r, "--model", str(r / "notmodel.model"), "--valid", "x.xyz"),
        "notmodel.model",
    ),
    Case(
        "calibrate valid NaN energy",
        lambda r: calibrate_tiny(r, "nan_energy.xyz", "cal_out"),
        "nan_energy.xyz' (--valid): calibration frame 2 has energy label nan",
    ),
    Case(
        "calibrate valid NaN forces",
        lambda r: calibrate_tiny(r, "nan_forces.xyz", "cal_out"),
        "nan_forces.xyz' (--valid): calibration frame 2 has non-finite force labels on atom(s) 5",
    ),
    Case(
        "calibrate valid unknown element",
        lambda r: calibrate_tiny(r, "iron_frame2.xyz", "cal_out"),
        "iron_frame2.xyz' (--valid), frame 2: element(s) ['Fe']",
    ),
    Case(
        "calibrate train unknown element",
        lambda r: calibrate_tiny(r, "held_out.xyz", "cal_out", train="iron_frame2.xyz"),
        "iron_frame2.xyz' (--train), frame 2: element(s) ['Fe']",
    ),
    Case(
        "calibrate train is valid",
        lambda r: calibrate_tiny(r, "labelled.xyz", "cal_out", train="labelled.xyz"),
        "4 of 4 validation frames are also training frames",
    ),
    Case(
        "calibrate ensemble with single-model flags",
        lambda r: [
            *calibrate_tiny(r, "held_out.xyz", "cal_out", train="labelled.xyz"),
            *("--model", str(r / "tiny.model"), "--sigma", "0.1", "--seed", "3"),
        ],
        "--train, --sigma, --seed: with 2 --model files",
    ),
    Case(
        "calibrate out under a file",
        lambda r: calibrate_tiny(r, "labelled.xyz", "afile/cal"),
        "afile/cal': '",
    ),
    Case(
        "calibrate model a folder",
        lambda r: calibrate(r, "--model", str(r / "campaigns"), "--valid", "x.xyz"),
        "campaigns' is a folder; give the model file itself",
    ),
    Case(
        "calibrate sigma 1e300",
        lambda r: [
            *calibrate_tiny(r, "held_out.xyz", "cal_out", train="labelled.xyz"),
            *("--sigma", "1e300"),
        ],
        "--sigma: sigma must be a positive number whose square is a finite float",
    ),
]


def select_argv(root: Path) -> list[str]:
    return ["select", "--features", str(root / "features.npy"), "--out", str(root / "sel.xyz")]


def features_argv(root: Path, name: str) -> list[str]:
    pool = str(root / "labelled.xyz")
    out = str(root / "sel.xyz")
    return ["select", "--features", str(root / name), "--pool", pool, "--k", "2", "--out", out]


def select_to(root: Path, out: str) -> list[str]:
    unc = str(root / "campaigns")  # not a saved model: --out must be refused before it loads
    pool = str(root / "labelled.xyz")
    return ["select", "--unc", unc, "--pool", pool, "--k", "2", "--out", str(root / out)]


SELECT = [
    Case("select out a folder", lambda r: select_to(r, "campaigns"), "is a folder"),
    Case(
        "select out is the pool",
        lambda r: [*features_argv(r, "features.npy"), "--out", str(r / "labelled.xyz")],
        "labelled.xyz' is the pool file (--pool); writing the selection there would replace "
        "your pool: give another file name",
    ),
    Case(
        "select out is --labelled",
        lambda r: [
            *select_to(r, "labelled.xyz"),
            *("--pool", str(r / "held_out.xyz"), "--labelled", str(r / "labelled.xyz")),
        ],
        "labelled.xyz' is the labelled frames file (--labelled)",
    ),
    Case("select out .traj", lambda r: select_to(r, "sel.traj"), "must end in .xyz or .extxyz"),
    Case(
        "select out under a file",
        lambda r: select_to(r, "afile/sel.xyz"),
        "afile' is a file, not a folder",
    ),
    Case("select out nowhere", lambda r: select_to(r, "no/sel.xyz"), "does not exist"),
    Case(
        "features numpy .pt", lambda r: features_argv(r, "numpy_features.pt"), "other than a tensor"
    ),
    Case("features text .pt", lambda r: features_argv(r, "junk.pt"), "junk.pt: not a torch.save"),
    Case("features text .npy", lambda r: features_argv(r, "junk.npy"), "junk.npy: not a numpy"),
    Case("features 1-D", lambda r: features_argv(r, "flat_features.pt"), "(n_pool, D)"),
    Case(
        "select k 0",
        lambda r: [*select_argv(r), "--pool", str(r / "labelled.xyz"), "--k", "0"],
        "--k",
    ),
    Case(
        "select k -2",
        lambda r: [*select_argv(r), "--pool", str(r / "labelled.xyz"), "--k", "-2"],
        "--k",
    ),
    Case(
        "select pool garbage",
        lambda r: [*select_argv(r), "--pool", str(r / "garbage.xyz"), "--k", "2"],
        "garbage.xyz",
    ),
    Case(
        "select pool unknown ext",
        lambda r: [*select_argv(r), "--pool", str(r / "thing.foo"), "--k", "2"],
        "thing.foo",
    ),
    Case(
        "select flag typo",
        lambda r: [*select_argv(r), "--pool", "p", "--k", "2", "--methd", "lcmd"],
        "--method",
    ),
]


def train_argv(root: Path, train: str, valid: str, *extra: str) -> list[str]:
    out = str(root / "trained.model")
    return [
        "train",
        "--train",
        str(root / train),
        "--valid",
        str(root / valid),
        "--out",
        out,
        *extra,
    ]


TRAIN = [
    Case("train garbage", lambda r: train_argv(r, "garbage.xyz", "labelled.xyz"), "garbage.xyz"),
    Case("train empty", lambda r: train_argv(r, "labelled.xyz", "empty.xyz"), "empty.xyz"),
    Case("train unlabelled", lambda r: train_argv(r, "start.xyz", "labelled.xyz"), "start.xyz"),
    Case("train flag typo", lambda r: train_argv(r, "a", "b", "--max-epocs", "3"), "--max-epochs"),
    Case(
        "train 64 gpus",
        lambda r: train_argv(
            r, "labelled.xyz", "held_out.xyz", "--accelerator", "gpu", "--devices", "64"
        ),
        "accelerator='gpu', devices=64",
    ),
]

DEMO = [
    Case("demo folder is a file", lambda r: ["demo", "--folder", str(r / "afile")], "afile"),
    Case("demo flag typo", lambda r: ["demo", "--foldr", "x"], "--folder"),
]


def _api_run(root: Path, argv: list[str]):
    from uq_bias.campaign import run

    return run(argv[1])


def _api_train(root: Path, argv: list[str]):
    from uq_bias.training import train

    return train(root / "binary.xyz", root / "labelled.xyz", root / "api.model")


def _api_select(root: Path, argv: list[str]):
    from uq_bias.selection import select

    return select(features=np.eye(3), k=-1)


def _api_read(root: Path, argv: list[str]):
    from uq_bias.io_structures import read_structures

    return read_structures(root / "thing.foo", "my frames")


API = [
    Case(
        "api run initial_frames 0",
        run_case("api1", **data(initial_frames=0)),
        "data.initial_frames",
        _api_run,
    ),
    Case("api train binary", lambda r: [], "binary.xyz", _api_train),
    Case("api select k -1", lambda r: [], "k must be >= 0", _api_select),
    Case("api read unknown ext", lambda r: [], "thing.foo", _api_read),
]

CASES = RUN + MD + CALIBRATE + SELECT + TRAIN + DEMO + API


def test_the_table_is_broad(inputs):
    commands = {c.argv(inputs)[0] for c in CASES if c.api is None}
    assert len(CASES) >= 30 and len([c for c in CASES if c.api]) >= 3
    assert commands == {"run", "md", "calibrate", "select", "train", "demo"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_message_and_writes_nothing(case, inputs, capsys):
    argv = case.argv(inputs)  # campaign YAMLs are written here, before the snapshot
    before = snapshot(inputs)
    start = time.perf_counter()
    if case.api is not None:
        with pytest.raises((ValueError, OSError)) as info:
            case.api(inputs, argv)
        status, output = 2, str(info.value)
    else:
        try:
            status = main(argv)
        except SystemExit as err:  # argparse: usage errors
            status = err.code
        captured = capsys.readouterr()
        output = captured.out + captured.err
    seconds = time.perf_counter() - start
    if os.environ.get("UQ_BIAS_SHOW_OUTPUT"):
        with capsys.disabled():
            print(f"\n--- {case.name} ({seconds:.1f} s, exit {status})\n{output}")
    assert status == 2, output
    assert case.names in output, output
    assert "Traceback" not in output
    assert snapshot(inputs) == before  # nothing written, nothing changed
    assert seconds < 15


def test_mistyped_flag_is_one_line_without_usage(capsys):
    """A flag the command does not have: one line naming the closest flag, not argparse's usage
    block (which ran to 30 lines for md)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["md", "--unc", "u", "--start", "s.xyz", "--out", "o.xyz", "--temprature", "3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.splitlines() == [
        "uq-bias md: error: unrecognized arguments: '--temprature' (did you mean "
        "--temperature?); see `uq-bias md --help`"
    ]
