"""Deep ensembles against MACE's own committee calculator, finite differences and bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import read, write

from uq_bias import keys
from uq_bias.bias import BiasConfig
from uq_bias.calculator import Calculator
from uq_bias.models.mace import MACEAdapter
from uq_bias.training.build import build_mace
from uq_bias.uncertainty.ensemble import Ensemble


def test_matches_mace_committee(cu_members, small_cu_frames):
    from mace.calculators import MACECalculator

    cu_cell = small_cu_frames[0]
    calc = Calculator(Ensemble(cu_members[:3]))
    atoms = cu_cell.copy()
    atoms.calc = calc
    atoms.get_potential_energy()
    ref_atoms = cu_cell.copy()
    ref_atoms.calc = MACECalculator(
        models=[copy.deepcopy(m) for m in cu_members[:3]], device="cpu", default_dtype="float64"
    )
    ref_atoms.get_potential_energy()
    ours, ref = calc.results, ref_atoms.calc.results
    assert abs(ours["energy"] - ref["energy"]) < 1e-6
    np.testing.assert_allclose(ours["forces"], ref["forces"], atol=1e-6)
    np.testing.assert_allclose(ours["stress"], ref["stress"], atol=1e-6)
    np.testing.assert_allclose(ours[keys.MEMBERS_ENERGY], ref["energy_comm"], atol=1e-6)
    np.testing.assert_allclose(ours[keys.MEMBERS_FORCES], ref["forces_comm"], atol=1e-6)
    assert abs(ours["energy_uncertainty"] ** 2 - ref["energy_var"]) < 1e-6
    np.testing.assert_allclose(
        ours["forces_uncertainty"] ** 2, ref["forces_var"].mean(axis=1), atol=1e-6
    )
    ref_stress_comm = np.array([s.reshape(3, 3) for s in ref["stress_comm"]])
    np.testing.assert_allclose(
        ours[keys.MEMBERS_STRESS],
        ref_stress_comm[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        ours["stress_uncertainty"], np.std(ours[keys.MEMBERS_STRESS], axis=0), atol=1e-12
    )


def test_uncertainty_is_differentiable(cu_members):
    """dU/dr and dU/d(eps) by autograd through the ensemble equal central finite differences."""
    ensemble = Ensemble(cu_members[:2])
    cell = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
    cell.numbers[2] = 13
    cell.rattle(0.05, seed=5)

    def uncertainty(atoms):
        return ensemble(ensemble.graph(atoms)).energy_uncertainty.item()

    graph = ensemble.graph(cell).requires_grad_(positions=True, strain=True)
    out = ensemble(graph, forces=True, stress=True)
    grad_r, grad_eps = torch.autograd.grad(
        out.energy_uncertainty.sum(), [graph.positions, graph.strain]
    )
    h = 1e-5
    moved = [cell.copy(), cell.copy()]
    moved[0].positions[3, 2] += h
    moved[1].positions[3, 2] -= h
    fd = (uncertainty(moved[0]) - uncertainty(moved[1])) / (2 * h)
    assert abs(grad_r[3, 2].item() - fd) < 1e-7 * max(1.0, abs(fd))
    strained = [cell.copy(), cell.copy()]
    for atoms, sign in zip(strained, (1, -1)):
        deform = np.eye(3)
        deform[0, 1] = deform[1, 0] = sign * h
        atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
    fd = (uncertainty(strained[0]) - uncertainty(strained[1])) / (2 * h)
    # the graph symmetrises eps, so dU/d(eps_01) is the derivative along eps_01 = eps_10
    assert abs(2 * grad_eps[0, 0, 1].item() - fd) < 1e-7 * max(1.0, abs(fd))


def test_batched_equals_single_and_selection_features(cu_members, small_cu_frames):
    ensemble = Ensemble(cu_members[:3])
    frames = small_cu_frames[:2]
    both = ensemble(ensemble.graph(frames))
    for index, frame in enumerate(frames):
        single = ensemble(ensemble.graph(frame))
        assert torch.allclose(both.energy_uncertainty[index], single.energy_uncertainty[0])
        assert torch.allclose(
            both.members[keys.MEMBERS_FORCES][:, both_atoms(frames, index)],
            single.members[keys.MEMBERS_FORCES],
        )
    features = ensemble.selection_features(ensemble.graph(frames))
    energies = both.members[keys.MEMBERS_ENERGY].detach()
    cov = torch.cov(energies.T)  # rows: structures, columns: members -> (S, S)
    torch.testing.assert_close(features @ features.T, cov, atol=1e-12, rtol=1e-10)


def both_atoms(frames, index):
    start = sum(len(a) for a in frames[:index])
    return slice(start, start + len(frames[index]))


def test_extxyz_keeps_member_values(cu_members, small_cu_frames, tmp_path):
    atoms = small_cu_frames[1].copy()
    atoms.calc = Calculator(Ensemble(cu_members[:3]), copy_to_atoms=True)
    atoms.get_forces()
    results = atoms.calc.results
    assert results[keys.MEMBERS_ENERGY].shape == (3,)
    assert results[keys.MEMBERS_STRESS].shape == (3, 6)
    path = tmp_path / "frame.xyz"
    atoms.calc = None
    write(path, atoms)
    back = read(path)
    np.testing.assert_allclose(back.info[keys.ENERGY_UNCERTAINTY], results["energy_uncertainty"])
    np.testing.assert_allclose(back.info[keys.MEMBERS_STRESS], results[keys.MEMBERS_STRESS])
    forces = back.arrays[keys.MEMBERS_FORCES].reshape(len(atoms), 3, 3).transpose(1, 0, 2)
    np.testing.assert_allclose(forces, results[keys.MEMBERS_FORCES], atol=1e-7)  # 8 decimals


def test_members_must_agree(cu_model):
    a = cu_model
    with pytest.raises(ValueError, match="elements"):
        Ensemble([a, build_mace([1, 6, 8], cutoff=4.0, seed=1)])
    with pytest.raises(ValueError, match="cutoff"):
        Ensemble([a, build_mace([13, 29], cutoff=5.0, seed=1)])
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([MACEAdapter(a)])


@pytest.fixture(scope="module")
def dft_scale_members():
    """Four tiny Al/Cu MACE members at DFT-scale energies (atomic reference energies of about
    -1625 eV, so an 8-atom cell sits near -13,000 eV) whose last readouts differ slightly:
    their energies differ by a few meV, about the float32 spacing at -13,000 eV (1 meV)."""
    from uq_bias.training.build import DataStatistics

    stats = DataStatistics({13: -1624.0, 29: -1625.5}, 10.0, 1.0, 0.0)
    base = build_mace([13, 29], cutoff=4.0, statistics=stats, seed=0)
    members = []
    for k in range(4):
        member = copy.deepcopy(base)
        weight = member.readouts[-1].linear_2.weight
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(k))
        with torch.no_grad():
            weight.add_(3e-3 * noise.to(weight.dtype))
        members.append(member)
    return members


@pytest.mark.parametrize("gradient", ["closed_form", "autograd"])
def test_float32_members_at_dft_scale_match_float64(dft_scale_members, gradient):
    """The same ensemble in float32 and float64: U, atom uncertainties and bias forces agree to
    1%, and U equals the population std of the float64 members' energies computed here with
    numpy. Forming the spread from float32 totals (1 meV apart) would not."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
    atoms.numbers[[1, 5]] = 13
    atoms.rattle(0.1, seed=1)
    results = {}
    for dtype in (torch.float64, torch.float32):
        members = [MACEAdapter(copy.deepcopy(m).to(dtype)) for m in dft_scale_members]
        frame = atoms.copy()
        frame.calc = Calculator(Ensemble(members), bias=BiasConfig(tau=1.0, gradient=gradient))
        frame.get_forces()
        results[dtype] = frame.calc.results
    ref, low = results[torch.float64], results[torch.float32]
    energies = ref[keys.MEMBERS_ENERGY]
    assert -13_100 < energies.mean() < -12_900 and 1e-3 < np.ptp(energies) < 1e-2
    u_numpy = np.std(energies)  # float64 members: exact to ~1e-12 eV
    assert ref[keys.ENERGY_UNCERTAINTY] == pytest.approx(u_numpy, rel=1e-6)
    assert low[keys.ENERGY_UNCERTAINTY] == pytest.approx(u_numpy, rel=1e-2)
    np.testing.assert_allclose(
        low[keys.FORCES_UNCERTAINTY], ref[keys.FORCES_UNCERTAINTY], rtol=1e-2
    )
    scale = np.abs(ref[keys.BIAS_FORCES]).max()
    assert np.abs(low[keys.BIAS_FORCES] - ref[keys.BIAS_FORCES]).max() < 1e-2 * scale
    for name in (keys.ENERGY_UNCERTAINTY, keys.BIAS_FORCES, keys.MEMBERS_ENERGY):
        assert np.asarray(low[name]).dtype == np.float64


def test_copied_results_are_replaced_not_left_from_an_earlier_calculation(
    cu_members, small_cu_frames
):
    """A biased calculation, then an unbiased one on a slab (no stress): before, the bias terms
    and the stress spread of the first stayed in atoms.info / atoms.arrays (and in any file
    written from them); now only the second's results are there."""
    from uq_bias.bias import BiasConfig

    atoms = small_cu_frames[1].copy()
    ensemble = Ensemble(cu_members[:3])
    atoms.calc = Calculator(ensemble, copy_to_atoms=True, bias=BiasConfig(tau=0.3))
    atoms.get_forces()
    assert keys.BIAS_FORCES in atoms.arrays and keys.STRESS_UNCERTAINTY in atoms.info
    atoms.pbc = [True, True, False]
    atoms.calc = Calculator(ensemble, copy_to_atoms=True)
    atoms.get_forces()
    extra = (set(atoms.info) | set(atoms.arrays)) & keys.EXTRA
    assert extra == set(atoms.calc.results) & keys.EXTRA
    assert keys.BIAS_FORCES not in extra and keys.STRESS_UNCERTAINTY not in extra
    np.testing.assert_allclose(
        atoms.info[keys.ENERGY_UNCERTAINTY], atoms.calc.results[keys.ENERGY_UNCERTAINTY]
    )


def test_forces_under_inference_mode_are_those_without_it(cu_members, small_cu_frames):
    """torch.inference_mode() around an ASE call (as in an inference script): before, the
    autograd forces failed with 'element 0 of tensors does not require grad'."""
    atoms = small_cu_frames[2].copy()
    atoms.calc = Calculator(Ensemble(cu_members[:2]))
    expected = atoms.get_forces().copy()
    atoms.calc.reset()
    with torch.inference_mode():
        np.testing.assert_allclose(atoms.get_forces(), expected, rtol=0, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_members_already_on_the_gpu_need_no_move(cu_members, small_cu_frames):
    """An ensemble of members built on the GPU keeps its calibration there: its calibrated
    uncertainties equal those of the same members on the CPU (no .to() called)."""
    on_gpu = Ensemble([copy.deepcopy(m).to("cuda") for m in cu_members[:2]])
    on_cpu = Ensemble(cu_members[:2])
    for model in (on_gpu, on_cpu):
        model.calibration.set(1.5, 2.0)
    results = []
    for model in (on_gpu, on_cpu):
        atoms = small_cu_frames[0].copy()
        atoms.calc = Calculator(model)
        atoms.get_forces()
        results.append(atoms.calc.results)
    for name in (keys.FORCES_UNCERTAINTY, keys.ENERGY_UNCERTAINTY):
        np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-6)
