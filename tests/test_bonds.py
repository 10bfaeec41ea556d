"""The covalent bond graph against ASE's neighbour list and closed forms (an acyclic molecule
has N - 1 bonds; an fcc crystal 6 per atom), and the intact test against bonds stretched by
hand."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list
from reference_data import side_of_bond

from uq_bias.bonds import BondGraph
from uq_bias.campaign.systems import builtin


@pytest.fixture(scope="module")
def dipeptide():
    return builtin("alanine_dipeptide")[0]


def test_molecule_bonds_match_ase_and_count_an_acyclic_graph(dipeptide):
    graph = BondGraph.of(dipeptide)
    i, j = neighbor_list("ij", dipeptide, 1.2 * covalent_radii[dipeptide.numbers])
    ase_pairs = {(a, b) for a, b in zip(i, j) if a < b}
    assert {tuple(p) for p in graph.pairs.tolist()} == ase_pairs
    assert len(graph.pairs) == len(dipeptide) - 1  # no ring: a tree on 22 atoms
    lengths = [dipeptide.get_distance(a, b) for a, b in graph.pairs]
    assert np.allclose(graph.stretch(dipeptide) * graph.radii_sum, lengths)


def test_fcc_crystal_has_twelve_neighbours_per_atom_across_the_boundary():
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    graph = BondGraph.of(crystal)
    assert len(graph.pairs) == 6 * len(crystal)
    nearest = 3.6 / np.sqrt(2)
    assert np.allclose(graph.stretch(crystal), nearest / (2 * covalent_radii[29]))
    assert graph.intact([crystal]).all()


@pytest.mark.parametrize(("scale", "kept"), [(1.4, True), (1.6, False)])
def test_a_bond_pulled_past_one_and_a_half_radii_sums_is_broken(dipeptide, scale, kept):
    graph = BondGraph.of(dipeptide)
    h = int(np.flatnonzero(dipeptide.numbers == 1)[0])
    (pair,) = [p for p in graph.pairs if h in p]
    heavy = int(pair[0] if pair[1] == h else pair[1])
    limit = covalent_radii[1] + covalent_radii[dipeptide.numbers[heavy]]
    pulled = dipeptide.copy()
    bond = pulled.positions[h] - pulled.positions[heavy]
    pulled.positions[h] = pulled.positions[heavy] + scale * limit * bond / np.linalg.norm(bond)
    assert graph.intact([dipeptide, pulled]).tolist() == [True, kept]


def test_a_frame_of_another_size_is_refused(dipeptide):
    with pytest.raises(ValueError, match="21 atoms, the reference structure 22"):
        BondGraph.of(dipeptide).stretch(dipeptide[:-1])


def torsion_motion(atoms, i, j):
    """(N, 3) the displacement of turning the side of bond i-j that holds j about the bond
    axis (unit angular speed): it keeps every bond length and angle."""
    side = side_of_bond(atoms, i, j)
    axis = atoms.positions[j] - atoms.positions[i]
    axis /= np.linalg.norm(axis)
    motion = np.zeros_like(atoms.positions)
    for k in side:
        motion[k] = np.cross(axis, atoms.positions[k] - atoms.positions[j])
    return motion


def test_projection_keeps_bond_lengths_and_angles_and_passes_torsions(dipeptide):
    import torch

    from uq_bias.bonds import project_rigid

    graph = BondGraph.of(dipeptide)
    pairs = graph.rigid_pairs()
    assert len(pairs) == 57  # 21 bonds + 36 pairs across a common atom (angles), counted by hand
    x = torch.tensor(dipeptide.positions)
    v = torch.tensor(np.random.default_rng(0).normal(size=x.shape))
    pv = project_rigid(v, x, torch.as_tensor(pairs)).numpy()
    step = 1e-5  # distances of the 1-2 and 1-3 pairs change only at second order along P v
    moved = dipeptide.copy()
    moved.positions += step * pv
    before = np.array([dipeptide.get_distance(a, b) for a, b in pairs])
    after = np.array([moved.get_distance(a, b) for a, b in pairs])
    assert np.abs(after - before).max() < 1e-8 < np.abs(step * v.numpy()).max()
    c, n = 4, 3  # phi's central bond N-CA is (3, 4) in the builtin; any rotatable bond works
    torsion = torsion_motion(dipeptide, n, c)
    np.testing.assert_allclose(
        project_rigid(torch.tensor(torsion), x, torch.as_tensor(pairs)).numpy(),
        torsion,
        atol=1e-9,
    )
