"""``label_diagnostics.py``: adjacent torsions, their pooled points and the periodic nearness
share, each against a hand computation."""

from __future__ import annotations

import label_diagnostics as ld  # benchmarks/ on sys.path (conftest)
import numpy as np
import pytest


def test_adjacent_torsions_share_a_central_atom():
    # a hexane-like chain 0-1-2-3-4-5: rotors 1-2, 2-3, 3-4; and one unrelated rotor 7-8
    quads = [(0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (6, 7, 8, 9)]
    assert ld.adjacent_pairs(quads) == [(0, 1), (1, 2)]


def test_local_points_pool_every_pair_of_every_frame():
    torsions = np.array([[10.0, 20.0, 30.0], [-10.0, -20.0, -30.0]])
    points = ld.local_points(torsions, [(0, 1), (1, 2)])
    expected = [[10, 20], [-10, -20], [20, 30], [-20, -30]]
    np.testing.assert_array_equal(points, expected)
    assert ld.local_points(torsions, []).shape == (0, 2)


@pytest.mark.parametrize(("tol", "share"), [(5.0, 1.0), (4.9, 0.0)])
def test_nearness_wraps_around_the_circle(tol, share):
    # 179 and -179 are 2 degrees apart, 0 and 365 = 5 degrees: the max-norm distance is 5
    points, reference = np.array([[179.0, 0.0]]), np.array([[-179.0, 365.0]])
    assert ld.near_share(points, reference, tol) == share


def test_nearness_counts_each_point_once():
    points = np.array([[0.0, 0.0], [90.0, 90.0], [-90.0, 180.0], [45.0, 0.0]])
    reference = np.array([[0.0, 10.0], [-95.0, -178.0]])
    assert ld.near_share(points, reference, 10.0) == 0.5  # the first and the third
    assert ld.near_share(points, np.zeros((0, 2)), 10.0) == 0.0


def test_a_missing_folder_or_campaign_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        ld.main([str(tmp_path / "nowhere"), "--test", str(tmp_path / "t.extxyz")])
    assert stop.value.code == 2
    assert "nowhere': no such folder" in capsys.readouterr().err
    (tmp_path / "seed0" / "plain-300K" / "data").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        ld.main([str(tmp_path / "seed0"), "--test", "t.extxyz", "--campaigns", "plain-300K"])
    assert stop.value.code == 2
    assert "--campaigns plain-300K: no such campaign" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ld.main([str(tmp_path / "seed0"), "--test", "t.extxyz"])
    assert "no campaign folder with data/labelled.extxyz" in capsys.readouterr().err
