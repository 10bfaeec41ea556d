"""Coverage of CV space: hand-counted cases and a brute-force cell-by-cell reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from uq_bias.campaign.coverage import LEVELS, coverage, visited_fractions

RAMA = dict(low=[-180.0, -180.0], high=[180.0, 180.0], periodic=[True, True])


def test_one_point_visits_one_cell_per_level():
    fractions = visited_fractions(np.array([[-60.0, 140.0]]), **RAMA)
    np.testing.assert_allclose(fractions, [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 1024])
    assert coverage(np.array([[-60.0, 140.0]]), **RAMA) == pytest.approx(
        (1 / 4 + 1 / 16 + 1 / 64 + 1 / 256 + 1 / 1024) / 5
    )


def test_period_boundary_is_one_cell():
    # phi = 180 and phi = -180 are the same angle: the same cell at every level
    same = np.array([[180.0, 10.0], [-180.0, 10.0], [540.0, 10.0]])
    np.testing.assert_allclose(
        visited_fractions(same, **RAMA), [4.0**-level for level in range(1, 6)]
    )
    # just inside the top edge is the last cell, not the first: two cells everywhere
    apart = np.array([[179.9, 10.0], [-180.0, 10.0]])
    np.testing.assert_allclose(
        visited_fractions(apart, **RAMA), [2 * 4.0**-level for level in range(1, 6)]
    )


def test_quadrant_centres_fill_the_coarsest_grid():
    points = np.array([[-90.0, -90.0], [-90.0, 90.0], [90.0, -90.0], [90.0, 90.0]])
    np.testing.assert_allclose(
        visited_fractions(points, **RAMA), [1, 4 / 16, 4 / 64, 4 / 256, 4 / 1024]
    )


def test_non_periodic_edges():
    # 1 CV in [0, 4]: the top edge counts in the last cell, values outside are not counted
    f = visited_fractions(np.array([[4.0], [0.0], [5.0], [-1.0]]), [0.0], [4.0], [False], (2, 4))
    np.testing.assert_allclose(f, [2 / 2, 2 / 4])
    assert coverage(np.empty((0, 1)), [0.0], [4.0], [False]) == 0.0


def brute_force(values, low, high, periodic, n):
    """Count cells [low + w c, low + w (c + 1)) holding a (wrapped) value, one by one."""
    x = values.copy()
    for j in range(x.shape[1]):
        if periodic[j]:
            period = high[j] - low[j]
            x[:, j] = (x[:, j] - low[j]) % period + low[j]
    d = x.shape[1]
    width = [(high[j] - low[j]) / n for j in range(d)]
    hit = 0
    for cell in itertools.product(range(n), repeat=d):
        for point in x:
            inside = True
            for j in range(d):
                lo = low[j] + cell[j] * width[j]
                top = cell[j] == n - 1 and not periodic[j]
                hi_ok = point[j] <= high[j] if top else point[j] < lo + width[j]
                inside &= lo <= point[j] and hi_ok
            if inside:
                hit += 1
                break
    return hit / n**d


def test_agrees_with_brute_force_count():
    rng = np.random.default_rng(1)
    values = np.column_stack([rng.uniform(-400, 400, 40), rng.normal(1.5, 0.6, 40)])
    low, high, periodic = [-180.0, 0.0], [180.0, 3.0], [True, False]
    levels = (2, 4, 8)
    expected = [brute_force(values, low, high, periodic, n) for n in levels]
    np.testing.assert_allclose(visited_fractions(values, low, high, periodic, levels), expected)
    assert LEVELS == (2, 4, 8, 16, 32)


def test_bad_box_is_an_error():
    with pytest.raises(ValueError, match="high > low"):
        coverage(np.zeros((1, 1)), [1.0], [1.0], [True])
    with pytest.raises(ValueError, match="values must be"):
        coverage(np.zeros((1, 3)), [0.0, 0.0], [1.0, 1.0], [True, True])


def test_more_than_two_cvs_is_the_mean_over_pairs():
    """d = 3 and 4 CVs: the mean of the 2-CV coverage of every pair, each pair counted cell by
    cell by the brute-force reference; d = 2 is the 2-CV coverage itself."""
    rng = np.random.default_rng(3)
    for d in (3, 4):
        values = rng.uniform(-180, 180, (25, d))
        low, high, periodic = [-180.0] * d, [180.0] * d, [True] * d
        levels = (2, 4, 8)
        pairs = list(itertools.combinations(range(d), 2))
        expected = np.mean(
            [
                np.mean(
                    [
                        brute_force(values[:, list(p)], low[:2], high[:2], [True] * 2, n)
                        for n in levels
                    ]
                )
                for p in pairs
            ]
        )
        assert len(pairs) == d * (d - 1) // 2
        assert coverage(values, low, high, periodic, levels) == pytest.approx(expected)
    two = rng.uniform(-180, 180, (25, 2))
    assert coverage(two, **RAMA) == pytest.approx(np.mean(visited_fractions(two, **RAMA)))


def test_two_torsions_of_alanine_dipeptide_give_the_phi_psi_coverage():
    """The torsion CVs of alanine dipeptide are phi and psi: the same coverage as the
    Ramachandran CVs on the same frames."""
    from uq_bias.campaign import cvs
    from uq_bias.campaign.systems import builtin

    start = builtin("alanine_dipeptide")[0]
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(6):
        atoms = start.copy()
        atoms.rattle(0.3, rng=rng)
        frames.append(atoms)
    torsions, rama = cvs.torsion_cvs(start), cvs.backbone_cvs(start)
    assert [cv.atoms for cv in torsions] == [cv.atoms for cv in rama]
    a = cvs.coverage_of(cvs.values(frames, torsions), torsions)
    b = cvs.coverage_of(cvs.values(frames, rama), rama)
    assert a == b > 0
