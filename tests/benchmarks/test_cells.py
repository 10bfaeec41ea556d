"""harness.cells: the strained cells against their closed forms, labels against the calculator."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from harness.cells import labelled, strained_cells


def test_strained_cells_have_the_closed_form_volumes_and_shear_and_keep_fractions():
    base = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    frames = strained_cells(base, [-0.05, 0.05], 0.04, 0.0, np.random.default_rng(0), lambda a: a)
    assert len(frames) == 4
    v0 = base.get_volume()
    assert frames[0].get_volume() == pytest.approx(v0 * 0.95**3)
    assert frames[1].get_volume() == pytest.approx(v0 * 1.05**3)
    for frame, sign in zip(frames[2:], (1.0, -1.0)):
        assert frame.get_volume() == pytest.approx(v0 * (1.0 - 0.04**2))  # det(I + g sym) = 1 - g^2
        gram = frame.cell.array @ frame.cell.array.T
        assert gram[0, 1] / gram[0, 0] == pytest.approx(2 * sign * 0.04 / (1 + 0.04**2))
        fractions = frame.get_scaled_positions(wrap=False)
        np.testing.assert_allclose(fractions, base.get_scaled_positions(wrap=False), atol=1e-12)


def test_rattle_is_the_given_gaussian_width():
    base = bulk("Cu", "fcc", a=3.6, cubic=True) * (4, 4, 4)
    rng = np.random.default_rng(1)
    (frame,) = strained_cells(base, [0.0], 0.0, 0.1, rng, lambda a: a)[:1]
    shift = frame.positions - base.positions
    assert shift.std() == pytest.approx(0.1, rel=0.1)


def test_labelled_copy_holds_the_calculators_results_and_nothing_else():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=2)
    atoms.info["junk"] = 1
    frame = labelled(atoms, EMT(), "strain")
    reference = atoms.copy()
    reference.calc = EMT()
    assert frame.get_potential_energy() == pytest.approx(reference.get_potential_energy())
    np.testing.assert_allclose(frame.get_forces(), reference.get_forces())
    np.testing.assert_allclose(frame.get_stress(), reference.get_stress())
    assert frame.info == {"subset": "strain"}
