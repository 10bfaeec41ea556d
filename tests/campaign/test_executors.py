"""Executors: a process pool and a local Dask cluster give the same labels as EMT in process."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

from uq_bias.campaign.executors import InProcess, make_executor
from uq_bias.campaign.oracles import Oracle, OracleSpec

from .flaky import fails
from .test_oracles import cu_frames

FLAKY = f"{Path(__file__).with_name('flaky.py')}:FlakyEMT"


def direct_emt(frames):
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = EMT()
        out.append((atoms.get_potential_energy(), atoms.get_forces()))
    return out


@contextlib.contextmanager
def executor_of(kind: str):
    """A process pool, or a Dask client connected by address to a local 2-worker cluster (the
    way a campaign reaches a cluster started by `dask scheduler` / `dask worker` or SLURM)."""
    if kind == "process":
        with make_executor("process", workers=2) as executor:
            yield executor
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with make_executor("dask", address=cluster.scheduler_address) as executor:
            yield executor


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_executor_labels_equal_direct_emt(kind):
    frames = cu_frames(6, seed=5)
    spec = OracleSpec("import", FLAKY, {"fail_every": 4, "mode": "nan"})
    with executor_of(kind) as executor:
        labelled, failures = Oracle(spec, executor).label(frames)
        order = [k for k, _ in executor.imap(_square, [3, 1, 2])]
        assert sorted(order) == [0, 1, 2]
        assert executor.map(_square, [3, 1, 2]) == [9, 1, 4]
    keep = [a for a in frames if not fails(a, 4)]
    assert [f.frame_id for f in failures] == [a.info["frame_id"] for a in frames if fails(a, 4)]
    assert [a.info["frame_id"] for a in labelled] == [a.info["frame_id"] for a in keep]
    for frame, (energy, forces) in zip(labelled, direct_emt(keep)):
        assert frame.get_potential_energy() == pytest.approx(energy, abs=1e-12)
        np.testing.assert_allclose(frame.get_forces(), forces, atol=1e-12)


def _square(x):
    return x * x


def test_in_process_and_unknown_kind():
    assert InProcess().map(_square, range(4)) == [0, 1, 4, 9]
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        make_executor("slurm")
