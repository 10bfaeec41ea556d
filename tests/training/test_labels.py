"""Reading labels from extended XYZ: calc results, REF_-style keys, Voigt and 3x3 stress."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from uq_bias.training.labels import LabelKeys, read_frames, stress_matrix


@pytest.fixture
def emt_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    return atoms


def test_calc_and_ref_keys_give_the_emt_values(tmp_path, emt_cell):
    energy, forces, stress = (
        emt_cell.get_potential_energy(),
        emt_cell.get_forces(),
        emt_cell.get_stress(voigt=False),
    )
    ase.io.write(tmp_path / "calc.extxyz", emt_cell)
    ref = emt_cell.copy()
    ref.info["REF_energy"] = energy
    ref.arrays["REF_forces"] = forces
    ref.info["REF_stress"] = stress.reshape(9)  # 9 numbers instead of Voigt
    ase.io.write(tmp_path / "ref.extxyz", ref)
    for path, keys in [("calc.extxyz", LabelKeys()), ("ref.extxyz", LabelKeys.with_prefix("REF_"))]:
        (frame,) = read_frames(tmp_path / path, keys)
        np.testing.assert_allclose(frame.get_potential_energy(), energy, rtol=0, atol=1e-7)
        np.testing.assert_allclose(frame.get_forces(), forces, rtol=0, atol=1e-7)
        np.testing.assert_allclose(frame.calc.results["stress"], stress, rtol=0, atol=1e-9)


def test_voigt_to_matrix_matches_ase(emt_cell):
    voigt = emt_cell.get_stress(voigt=True)
    np.testing.assert_allclose(
        stress_matrix(voigt, "x"), emt_cell.get_stress(voigt=False), rtol=0, atol=1e-15
    )
    with pytest.raises(ValueError, match="6 \\(Voigt\\) or 9"):
        stress_matrix(np.zeros(4), "x")


def test_frame_without_forces_names_file_and_index(tmp_path, emt_cell):
    good = emt_cell.copy()
    good.info["REF_energy"] = 1.0
    good.arrays["REF_forces"] = np.zeros((len(good), 3))
    bad = good.copy()
    del bad.arrays["REF_forces"]
    path = tmp_path / "data.extxyz"
    ase.io.write(path, [good, good, bad])
    with pytest.raises(ValueError, match=r"data\.extxyz, frame 2: no forces label"):
        read_frames(path, LabelKeys.with_prefix("REF_"))
    with pytest.raises(ValueError, match=r"frame 0: no energy label.*'energy'"):
        read_frames(path)
    with pytest.raises(FileNotFoundError, match="missing.extxyz"):
        read_frames(tmp_path / "missing.extxyz")
