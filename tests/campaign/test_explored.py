"""Coverage of explored frames leaves out frames of a molecule that came apart: checked against
a brute-force cell count of the frames kept by hand."""

from __future__ import annotations

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from reference_data import side_of_bond

from uq_bias.campaign import cvs as cvlib
from uq_bias.campaign.explored import coverage_by_iteration, intact
from uq_bias.campaign.state import CampaignState, write_frames
from uq_bias.campaign.systems import builtin

from .test_coverage import brute_force


def twisted(start, quad, angle):
    """``start`` with the dihedral ``quad`` set to ``angle`` degrees, turning the whole side of
    the molecule beyond the central bond."""
    atoms = start.copy()
    atoms.set_dihedral(*quad, angle, indices=side_of_bond(start, quad[1], quad[2]))
    return atoms


def labelled(frames):
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
    return frames


def test_explored_coverage_counts_only_frames_of_an_intact_molecule(tmp_path):
    start = builtin("alanine_dipeptide")[0]
    cvs = cvlib.backbone_cvs(start)
    phi = cvs[0].atoms
    good = [twisted(start, phi, a) for a in (-150.0, -60.0, 60.0)]
    broken = twisted(start, phi, 150.0)
    h = int(np.flatnonzero(broken.numbers == 1)[-1])
    broken.positions[h] += [4.0, 0.0, 0.0]  # a hydrogen boiled off: no longer in one piece
    state = CampaignState(tmp_path / "c")
    write_frames(state.data_path, labelled([start.copy()]))
    write_frames(state.iteration_dir(0) / "walkers" / "w00.extxyz", good[:2] + [broken])
    write_frames(state.iteration_dir(1) / "walkers" / "w00.extxyz", good[2:])

    (row,) = coverage_by_iteration(state, cvs, [2], reference=start)
    box = ([-180.0, -180.0], [180.0, 180.0], [True, True])

    def by_hand(frames):
        values = np.array([[cv.value(a) for cv in cvs] for a in frames])
        return float(np.mean([brute_force(values, *box, n) for n in (2, 4, 8, 16, 32)]))

    assert (row.n_explored, row.n_broken) == (4, 1)
    assert np.isclose(row.explored, by_hand(good))
    assert np.isclose(row.explored_all, by_hand(good + [broken]))
    assert row.explored < row.explored_all
    (unfiltered,) = coverage_by_iteration(state, cvs, [2])
    assert (unfiltered.n_broken, unfiltered.explored) == (0, row.explored_all)


def test_periodic_reference_or_other_size_counts_every_frame():
    start = builtin("alanine_dipeptide")[0]
    crystal = start.copy()
    crystal.set_cell([30.0, 30.0, 30.0])
    crystal.pbc = True
    apart = start.copy()
    apart.positions[0] += [5.0, 0.0, 0.0]
    assert intact([apart, start], start).tolist() == [False, True]
    assert intact([apart], crystal).tolist() == [True]
    assert intact([start[:-1]], start).tolist() == [True]
