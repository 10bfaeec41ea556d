"""The MIL-53(Al) benchmark's pure parts: the breathing path's interpolation, the properties'
reference, and the case's campaign configs (valid, differing only in exploration)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from exploration_npt import MIL53_QUICK, mil53_case
from mil53_properties import reference
from mil53_test_set import QUICK, between, large_pore

from uq_bias.campaign.config import from_dict


def two_cells() -> tuple[Atoms, Atoms]:
    """A 'large' and a 'narrow' cell of 3 atoms; atom 0 crosses the cell face between them."""
    lp = Atoms("AlOH", cell=np.diag([6.0, 16.0, 12.0]), pbc=True)
    lp.set_scaled_positions([[0.5, 0.98, 0.5], [0.1, 0.2, 0.3], [0.7, 0.6, 0.4]])
    np_ = Atoms("AlOH", cell=[[6.0, 0.0, 0.0], [0.0, 18.0, 0.0], [0.0, 0.5, 7.0]], pbc=True)
    np_.set_scaled_positions([[0.5, 0.02, 0.5], [0.1, 0.3, 0.2], [0.7, 0.5, 0.6]])
    return lp, np_


def test_between_starts_at_the_large_pore_and_ends_at_the_narrow_one_modulo_the_lattice():
    lp, np_ = two_cells()
    start, end = between(lp, np_, 0.0), between(lp, np_, 1.0)
    np.testing.assert_allclose(start.cell.array, lp.cell.array)
    np.testing.assert_allclose(start.positions, lp.positions, atol=1e-12)
    np.testing.assert_allclose(end.cell.array, np_.cell.array)
    shift = end.get_scaled_positions(wrap=False) - np_.get_scaled_positions(wrap=False)
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-12)


def test_between_takes_the_short_way_across_a_cell_face():
    lp, np_ = two_cells()
    half = between(lp, np_, 0.5)
    np.testing.assert_allclose(half.cell.array, 0.5 * (lp.cell.array + np_.cell.array))
    # 0.98 -> 1.02 (not 0.98 -> 0.02 the long way round): the midpoint is on the face, y = 1.0
    assert half.get_scaled_positions(wrap=False)[0, 1] == pytest.approx(1.0)
    assert half.get_scaled_positions(wrap=False)[1, 1] == pytest.approx(0.25)


def test_reference_properties_are_the_pores_volumes_and_energy_difference():
    lp, np_ = two_cells()
    lp.calc = SinglePointCalculator(lp, energy=-10.0)
    np_.calc = SinglePointCalculator(np_, energy=-10.35)
    found = reference([lp, np_])
    assert found["volume_lp"] == pytest.approx(6.0 * 16.0 * 12.0)
    assert found["volume_np"] == pytest.approx(6.0 * 18.0 * 7.0)
    assert found["delta_e"] == pytest.approx(-0.35)


def test_large_pore_is_the_relaxed_cell_of_the_recipe():
    atoms = large_pore()
    assert len(atoms) == 76 and atoms.pbc.all() and atoms.calc is None
    assert atoms.get_volume() == pytest.approx(1525.8, abs=0.5)


def test_mil53_campaigns_are_valid_and_differ_only_in_exploration(tmp_path):
    case = mil53_case(MIL53_QUICK, QUICK)
    configs = [case.config(v, seed=1) for v in case.variants]
    for config in configs:
        parsed = from_dict({**config, "folder": str(tmp_path / config["folder"])})
        assert parsed.oracle.kind == "gfn1-xtb" and parsed.exploration.ensemble == "npt"
        assert parsed.exploration.timestep == 1.0
        rest = {k: v for k, v in config.items() if k not in ("exploration", "folder")}
        assert rest == {k: v for k, v in configs[0].items() if k not in ("exploration", "folder")}
    temperatures = [c["exploration"]["temperature"] for c in configs]
    assert temperatures == [300.0, 300.0, 300.0, 600.0, 300.0]
    assert configs[1]["exploration"]["bias"]["tau_rel_stress"] == 0.0
    assert configs[4]["exploration"]["ladder"] == [[300.0, 0.0], [300.0, 0.25]]


def test_both_pores_lie_inside_the_coverage_box():
    """The narrow pore as GFN1-xTB has it (6.85 x 19.37 x 7.56 A, 1003 A^3) and the large pore
    of the recipe: a box that misses either measures no breathing at all."""
    from exploration_npt import cell_cvs

    from uq_bias.campaign.cvs import cell_value

    lp = large_pore()
    np_ = Atoms(lp.numbers, cell=np.diag([6.85, 19.37, 7.56]), pbc=True)
    for atoms in (lp, np_):
        for cv in cell_cvs("mil53"):
            low, high = cv.range
            assert low < cell_value(cv.kind, atoms) < high, (cv.name, cell_value(cv.kind, atoms))
