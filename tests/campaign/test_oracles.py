"""Oracles: labels equal the reference calculator's numbers; failures are left out, with reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from uq_bias.campaign.oracles import Failure, Oracle, OracleSpec, import_object
from uq_bias.campaign.state import with_id

from .flaky import fails

FLAKY = f"{Path(__file__).with_name('flaky.py')}:FlakyEMT"


def cu_frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(with_id(atoms))
    return frames


def test_a_misspelt_keyword_is_refused_and_a_known_one_reaches_tblite():
    """ASE calculators store any keyword: ``TBLite(chrage=1)`` would label at charge 0."""
    pytest.importorskip("tblite")
    from tblite.ase import TBLite

    with pytest.raises(ValueError, match=r"oracle.kwargs.chrage .* \(did you mean 'charge'\?\)"):
        OracleSpec("gfn2-xtb", kwargs={"chrage": 1}).build()
    # tblite's own alias of a parameter is its keyword too
    assert OracleSpec("gfn2-xtb", kwargs={"alpb_solvation": "water"}).build().parameters[
        "solvation"
    ] == ("alpb", "water")

    water = molecule("H2O")
    water.calc = OracleSpec("gfn2-xtb", kwargs={"charge": 1, "multiplicity": 2}).build()
    cation = water.get_potential_energy()
    water.calc = TBLite(method="GFN2-xTB", charge=1, multiplicity=2, verbosity=0)
    assert cation == pytest.approx(water.get_potential_energy(), abs=1e-8)
    water.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert abs(cation - water.get_potential_energy()) > 1.0  # the charge was used (eV)


def test_emt_labels_match_emt():
    frames = cu_frames(3)
    labelled, failures = Oracle(OracleSpec("emt")).label(frames)
    assert failures == []
    for frame, atoms in zip(labelled, frames):
        reference = atoms.copy()
        reference.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(reference.get_potential_energy())
        np.testing.assert_allclose(frame.get_forces(), reference.get_forces(), atol=1e-12)
        np.testing.assert_allclose(frame.get_stress(), reference.get_stress(), atol=1e-12)
        assert frame.info["frame_id"] == atoms.info["frame_id"]


def test_gfn2_labels_match_tblite_and_give_no_stress():
    from tblite.ase import TBLite

    water = molecule("H2O")
    water.rattle(0.02, seed=1)
    (frame,), failures = Oracle(OracleSpec("gfn2-xtb")).label([water])
    assert failures == []
    reference = water.copy()
    reference.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert frame.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(frame.get_forces(), reference.get_forces(), atol=1e-7)
    assert "stress" not in frame.calc.results


@pytest.mark.parametrize("mode", ["raise", "nan", "short", "stress5"])
def test_failing_frames_are_left_out_with_a_reason(mode):
    frames = cu_frames(12, seed=3)
    expected_fail = {a.info["frame_id"] for a in frames if fails(a, 3)}
    assert 0 < len(expected_fail) < len(frames)  # the rule picks some frames, not all
    spec = OracleSpec("import", FLAKY, {"fail_every": 3, "mode": mode})
    labelled, failures = Oracle(spec).label(frames)
    assert {f.frame_id for f in failures} == expected_fail
    assert {a.info["frame_id"] for a in labelled} == {
        a.info["frame_id"] for a in frames
    } - expected_fail
    reason = {
        "raise": "SCF did not converge",
        "nan": "non-finite forces",
        "short": "the oracle returned forces of shape (7, 3), expected (8, 3)",
        "stress5": "the oracle returned stress of shape (5,), expected (6,)",
    }[mode]
    assert all(isinstance(f, Failure) and reason in f.reason for f in failures)
    for frame in labelled:
        assert np.isfinite(frame.get_forces()).all()


def test_import_paths_and_their_errors():
    assert import_object("ase.calculators.emt:EMT") is EMT
    assert import_object("ase.calculators.emt.EMT") is EMT
    with pytest.raises(ValueError, match="has no 'Nope'"):
        import_object("ase.calculators.emt:Nope")
    with pytest.raises(ValueError, match="cannot import"):
        import_object("no_such_package_xyz.module:Calc")
    with pytest.raises(FileNotFoundError, match="no file"):
        import_object("/does/not/exist.py:Calc")
    with pytest.raises(ValueError, match="unknown oracle kind"):
        OracleSpec("dft")
