"""uq_bias.Calculator on NequIP models: against nequip's ASE calculator and finite differences."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

import uq_bias
from uq_bias import load_model
from uq_bias.testing import check_adapter

pytest.importorskip("nequip.model")  # a real nequip, not a namespace of test dirs

from uq_bias.models.nequip import NequIPAdapter, nequip_global_state  # noqa: E402


@pytest.fixture(scope="module")
def nequip_calculator(trained_nequip):
    """nequip's NequIPCalculator on the packaged model, with nequip's own neighbour list."""
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.integrations.ase import NequIPCalculator
    from nequip.model.saved_models import load_saved_model

    with nequip_global_state():
        model = load_saved_model(str(trained_nequip.package)).eval()
    names = model.type_names
    transforms = [
        ChemicalSpeciesToAtomTypeMapper(
            model_type_names=names, chemical_species_to_atom_type_map={n: n for n in names}
        ),
        NeighborListTransform(r_max=float(model.metadata["r_max"])),
    ]
    return NequIPCalculator(model=model, device="cpu", transforms=transforms)


@pytest.mark.parametrize("structure", ["cell", "cluster"])
def test_calculator_matches_nequip_calculator(
    trained_nequip, nequip_calculator, structure, request
):
    ours = request.getfixturevalue(structure)
    ours.calc = uq_bias.Calculator(str(trained_nequip.package))
    theirs = ours.copy()
    theirs.calc = nequip_calculator
    with nequip_global_state():  # nequip's data pipeline expects float64 as the default dtype
        energy = theirs.get_potential_energy()
        reference = {
            "forces": theirs.get_forces(),
            "energies": theirs.get_potential_energies(),
            "stress": theirs.get_stress() if theirs.pbc.all() else None,
        }
    assert abs(ours.get_potential_energy() - energy) < 1e-10 * max(1.0, abs(energy))
    np.testing.assert_allclose(ours.get_forces(), reference["forces"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        ours.get_potential_energies(), reference["energies"], rtol=0, atol=1e-10
    )
    if ours.pbc.all():
        np.testing.assert_allclose(ours.get_stress(), reference["stress"], rtol=0, atol=1e-10)


def test_per_edge_type_cutoffs_match_nequip_calculator(build_nequip, cell, cluster):
    """Asymmetric per-edge-type cutoffs (Al-Al 3.0, Cu->Al 3.4, Cu-Cu 4.0 A): the adapter agrees
    with nequip's calculator (whose neighbour list is pruned by them) and passes the contract."""
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms

    cutoffs = {"Al": 3.0, "Cu": {"Al": 3.4, "Cu": 4.0}}
    model = build_nequip(per_edge_type_cutoff=cutoffs).eval()
    adapter = NequIPAdapter(model)
    names = model.type_names
    transforms = basic_transforms(model.metadata, 4.0, names, {n: n for n in names})
    theirs = cell.copy()
    theirs.calc = NequIPCalculator(model=model, device="cpu", transforms=transforms)
    with nequip_global_state():
        energy, forces = theirs.get_potential_energy(), theirs.get_forces()
        stress = theirs.get_stress()
    cell.calc = uq_bias.Calculator(adapter)
    assert abs(cell.get_potential_energy() - energy) < 1e-10 * max(1.0, abs(energy))
    np.testing.assert_allclose(cell.get_forces(), forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(cell.get_stress(), stress, rtol=0, atol=1e-10)
    plain = NequIPAdapter(build_nequip())  # the same weights without the per-type cutoffs
    assert abs(plain(plain.graph(cell)).energy.item() - energy) > 1e-6, "no edge was pruned"
    check_adapter(adapter, molecule=cluster, periodic=cell.copy())


@pytest.mark.parametrize("structure", ["cell", "cluster"])
def test_calculator_forces_and_stress_match_finite_differences(trained_nequip, structure, request):
    atoms = request.getfixturevalue(structure)
    atoms.calc = uq_bias.Calculator(load_model(trained_nequip.checkpoint))
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=range(4))
    np.testing.assert_allclose(atoms.get_forces()[:4], numeric, rtol=1e-5, atol=1e-7)
    if atoms.pbc.all():
        numeric = calculate_numerical_stress(atoms, eps=1e-5)
        np.testing.assert_allclose(atoms.get_stress(), numeric, rtol=1e-5, atol=1e-7)


needs_bias = pytest.mark.skipif(
    any(
        importlib.util.find_spec(m) is None
        for m in ("uq_bias.bias", "uq_bias.uncertainty.ensemble")
    ),
    reason="the biased calculator (uq_bias.bias, uq_bias.uncertainty.ensemble) is not available",
)


@needs_bias
def test_biased_forces_match_finite_differences_of_the_biased_energy(
    trained_nequip, build_nequip, cell
):
    """A two-member NequIP ensemble (the trained model and a second model) with an absolute bias:
    the calculator's forces and stress are minus the gradients of its (biased) energy."""
    from uq_bias.bias import BiasConfig
    from uq_bias.uncertainty.ensemble import Ensemble

    members = [load_model(trained_nequip.checkpoint), NequIPAdapter(build_nequip(seed=7))]
    atoms = cell
    atoms.calc = uq_bias.Calculator(Ensemble(members), bias=BiasConfig(tau=2.0))
    atoms.get_potential_energy()
    results = atoms.calc.results
    assert abs(results["bias_energy"]) > 1e-3, "the bias is too weak to test anything"
    assert np.abs(results["bias_forces"]).max() > 1e-3
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=range(4))
    np.testing.assert_allclose(atoms.get_forces()[:4], numeric, rtol=1e-5, atol=1e-7)
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_stress(), numeric, rtol=1e-5, atol=1e-7)
