"""The plain ASE calculator: conventions, numerical derivatives, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from uq_bias import Calculator, load_model


def test_periodic_cell_matches_ase_numerical_derivatives(tiny_mace, cu_cell):
    calc = Calculator(tiny_mace)
    cu_cell.calc = calc
    np.testing.assert_allclose(
        cu_cell.get_stress(), calculate_numerical_stress(cu_cell, eps=1e-5), atol=1e-8
    )
    np.testing.assert_allclose(
        cu_cell.get_forces()[:2],
        calculate_numerical_forces(cu_cell, eps=1e-4, iatoms=range(2)),
        atol=1e-6,
    )


def test_molecule_has_forces_and_energies_but_no_stress(tiny_mace, methanol):
    methanol.calc = Calculator(tiny_mace)
    energies = methanol.get_potential_energies()
    assert energies.shape == (len(methanol),)
    assert np.isclose(energies.sum(), methanol.get_potential_energy())
    assert methanol.get_potential_energy(force_consistent=True) == methanol.get_potential_energy()
    with pytest.raises(PropertyNotImplementedError):
        methanol.get_stress()


def test_unknown_element_names_it(tiny_mace):
    atoms = Atoms("FeH", positions=[[0, 0, 0], [1.5, 0, 0]])
    atoms.calc = Calculator(tiny_mace)
    with pytest.raises(ValueError, match=r"\['Fe'\] are not known.*'H', 'C', 'O', 'Al', 'Cu'"):
        atoms.get_potential_energy()


def test_nan_positions_are_rejected(tiny_mace, methanol):
    methanol.positions[2, 1] = np.nan
    methanol.calc = Calculator(tiny_mace)
    with pytest.raises(ValueError, match=r"non-finite .* \[2\]"):
        methanol.get_forces()


def test_missing_file_and_non_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.model")
    text = tmp_path / "notes.model"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="not a torch model file"):
        load_model(text)
    tensors = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, tensors)
    with pytest.raises(ValueError, match="holds a dict, not a torch.nn.Module"):
        load_model(tensors)


def test_model_file_round_trip(tiny_mace, cu_cell, tmp_path):
    path = tmp_path / "tiny.model"
    torch.save(tiny_mace, path)
    a, b = cu_cell.copy(), cu_cell.copy()
    a.calc, b.calc = Calculator(tiny_mace), Calculator(str(path))
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)
