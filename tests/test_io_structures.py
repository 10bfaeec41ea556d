"""The one structure reader: good files of any format read (a binary .traj included), labels
kept; the bad ones are covered case by case in tests/test_bad_inputs.py."""

from __future__ import annotations

import ase.io
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from uq_bias.io_structures import StructureFileError, read_structures


@pytest.mark.parametrize("name", ["frames.traj", "frames.extxyz", "frames.xyz"])
def test_reads_every_frame_with_its_labels(tmp_path, name):
    frames = []
    for k in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        frames.append(atoms)
    ase.io.write(tmp_path / name, frames)
    read = read_structures(tmp_path / name, "test frames")
    assert len(read) == 3
    assert read[2].get_potential_energy() == pytest.approx(frames[2].get_potential_energy())


def test_an_explicit_format_is_used_and_checked(tmp_path):
    ase.io.write(tmp_path / "frames.dat", bulk("Cu"), format="extxyz")
    assert len(read_structures(tmp_path / "frames.dat", format="extxyz")) == 1
    with pytest.raises(StructureFileError, match="frames.dat.*ASE knows no format 'xyzz'"):
        read_structures(tmp_path / "frames.dat", format="xyzz")
