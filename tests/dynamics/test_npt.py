"""NPT in the batched engine (stochastic cell rescaling, :mod:`uq_bias.dynamics.barostat`) against
independent references: the ideal gas's closed-form volume distribution; ASE's MTK barostat on
the same Morse potential (ASE's own numpy ``MorsePotential``); the compressibility from the mean
volumes at two pressures; the biased calculator's stress for the cell move; each walker alone
for a batch; the watchdog's cell checks; bad input.

Error bars: every walker of a batch (and every ASE run) is an independent run; after 1.2 ps of
equilibration a run is cut into two blocks of about 10 barostat times (2.6 ps), and a mean or
variance comes with the spread of its block values / sqrt(number of blocks)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.io import read
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.stress import voigt_6_to_full_3x3_stress
from pair_potentials import ase_morse, morse_adapter
from scipy import stats

from uq_bias import keys
from uq_bias.bias import BiasConfig
from uq_bias.calculator import Calculator
from uq_bias.dynamics import (
    ExploreConfig,
    WatchdogConfig,
    barostat,
    explore,
    run_batched,
    walker_specs,
)
from uq_bias.dynamics.watchdog import cell_shear
from uq_bias.uncertainty.gradient import GradientFeatureUncertainty

#: Only the cell checks: the default energy and distance stops (k_B T limits) are off, so that a
#: walker started off equilibrium (a compressed cell) runs its steps.
QUIET = WatchdogConfig(
    min_distance=None,
    max_force=None,
    min_distance_ratio=None,
    max_bond_stretch=None,
    max_energy_rise_kt=None,
    max_energy_drop_kt=None,
)
TEMPERATURE = 300.0
#: Shared by the MTK runs and ours: 4 fs steps, tau_p = 250 fs (about 60 steps: Euler-Maruyama's
#: error on a variance is about dt / (2 tau_p) < 1 %), bulk modulus near the model's (~260 GPa).
DT, PDAMP, TDAMP, BULK = 4.0, 250.0, 100.0, 260.0
NPT = ExploreConfig(
    timestep=DT,
    temperature=TEMPERATURE,
    ensemble="npt",
    engine="batched",
    pdamp=PDAMP,
    tdamp=TDAMP,
    bulk_modulus=BULK,
    sample_every=5,
    progress=False,
    watchdog=QUIET,
)


def _crystal(repeat=(1, 1, 1), seed: int = 1, a: float = 3.585) -> Atoms:
    """Rattled fcc Cu; the Morse model's lattice constant at 300 K and 0 GPa is 3.585 A."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True) * repeat
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def morse():
    return morse_adapter()


@pytest.fixture(scope="module")
def morse_uq(morse):
    """Gradient-feature uncertainty of the Morse model, conditioned on three rattled cells."""
    return GradientFeatureUncertainty(morse).fit([_crystal(seed=s, a=3.6) for s in range(3)])


def test_torch_morse_is_ase_morse(morse):
    """The model the engines share: energy, forces and stress of the torch module equal ASE's
    MorsePotential on a rattled, sheared cell."""
    atoms = _crystal((2, 1, 1))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + [[0.02, 0.03, 0], [0.03, -0.01, 0], [0, 0, 0]]))
    reference = ase_morse()
    reference.calculate(atoms, ["energy", "forces", "stress"])
    ours = Calculator(morse)
    ours.calculate(atoms, ["energy", "forces", "stress"])
    for name in ("energy", "forces", "stress"):
        np.testing.assert_allclose(ours.results[name], reference.results[name], atol=1e-10)


def _symmetric_noise(generator: torch.Generator, walkers: int) -> torch.Tensor:
    xi = torch.randn(walkers, 3, 3, generator=generator, dtype=torch.float64)
    return 0.5 * (xi + xi.transpose(1, 2))  # diagonal N(0, 1), off-diagonal N(0, 1/2)


@pytest.mark.parametrize("isotropic", [True, False], ids=["isotropic", "full"])
def test_ideal_gas_volume_is_gamma(isotropic):
    """U = 0, N = 2 atoms: the isothermal-isobaric volume is Gamma(N + 1, kT / P0), mean
    (N + 1) kT / P0, variance (N + 1) (kT / P0)^2 (for both modes: the full cell's measure
    (det h)^-2 dh has the isotropic volume marginal). 4000 independent walkers, their volumes
    after 20 tau_p. A sampler of the other common measure, dV / V (Gamma(N)), or of V dV
    (Gamma(N + 2)) is rejected by the same Kolmogorov-Smirnov test."""
    walkers, n, steps = 4000, 2, 2000
    kT, dt = units.kB * TEMPERATURE, 1.0 * units.fs
    pressure = (n + 1) * kT / 100.0  # <V> = 100 A^3
    generator = torch.Generator().manual_seed(0)
    batch = torch.arange(walkers).repeat_interleave(n)
    masses = torch.full((walkers * n,), 63.5, dtype=torch.float64)
    positions = 4.6 * torch.rand(walkers * n, 3, generator=generator, dtype=torch.float64)
    momenta = torch.randn(walkers * n, 3, generator=generator, dtype=torch.float64)
    momenta = momenta * (masses[:, None] * kT).sqrt()
    cells = 100.0 ** (1 / 3) * torch.eye(3, dtype=torch.float64).repeat(walkers, 1, 1)
    zeros, stress = torch.zeros_like(positions), torch.zeros_like(cells)
    for _ in range(steps):
        cell_noise = (
            torch.randn(walkers, generator=generator, dtype=torch.float64)
            if isotropic
            else _symmetric_noise(generator, walkers)
        )
        noise = torch.randn(walkers * n, 3, generator=generator, dtype=torch.float64)
        positions, momenta, cells = barostat.baoa(
            positions,
            momenta,
            zeros,
            masses,
            cells,
            stress,
            batch,
            noise,
            cell_noise,
            dt=dt,
            friction=0.1 / dt,
            kT=kT,
            pressure=pressure,
            compressibility=1 / pressure,
            tau=100 * dt,
            isotropic=isotropic,
        )
    volume = barostat.volume(cells).numpy()
    scale = kT / pressure
    mean, variance = (n + 1) * scale, (n + 1) * scale**2
    assert abs(volume.mean() - mean) < 4 * np.sqrt(variance / walkers)
    # var of the sample variance of a Gamma(k): (mu4 - sigma^4) / W, mu4 = 3 (k + 2) k scale^4
    var_error = np.sqrt((3 * (n + 3) * (n + 1) - (n + 1) ** 2) * scale**4 / walkers)
    assert abs(volume.var() - variance) < 4 * var_error
    assert stats.kstest(volume, stats.gamma(n + 1, scale=scale).cdf).pvalue > 1e-3
    for wrong in (n, n + 2):
        assert stats.kstest(volume, stats.gamma(wrong, scale=scale).cdf).pvalue < 1e-6


def _batched_volumes(model, start, walkers, steps, **options) -> np.ndarray:
    """(walkers, frames) volumes of a batched NPT run from ``start``, one frame every 5 steps."""
    config = replace(NPT, steps=steps, **options)
    runs = explore(Calculator(model), start, config, walkers=walkers)
    assert set(runs.stop_reasons) == {"completed"}
    return np.array([[frame.get_volume() for frame in w.frames] for w in runs.walkers])


def _mtk_volumes(start, walkers, steps, cell: str, pressure: float = 0.0) -> np.ndarray:
    """(walkers, frames) volumes of ASE's MTK NPT (IsotropicMTKNPT or MTKNPT) on ASE's own
    Morse calculator, the same settings, every 5 steps."""
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT

    runs = []
    for k in range(walkers):
        atoms = start.copy()
        atoms.calc = ase_morse()
        thermalize_momenta(atoms, TEMPERATURE, rng=np.random.default_rng([7, k]))
        Stationary(atoms)
        md = (MTKNPT if cell == "full" else IsotropicMTKNPT)(
            atoms,
            DT * units.fs,
            temperature_K=TEMPERATURE,
            pressure_au=pressure * units.GPa,
            tdamp=TDAMP * units.fs,
            pdamp=PDAMP * units.fs,
        )
        volumes = []
        for step, _ in enumerate(md.irun(steps)):
            if step and step % 5 == 0:
                volumes.append(atoms.get_volume())
        runs.append(volumes)
    return np.array(runs)


def _blocks(volumes: np.ndarray, burn: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block (``blocks`` per run after ``burn`` frames): the mean volume, and the mean of
    (V - <V>)^2 about the mean <V> of all runs (not about the block's own mean, which would
    leave out the fluctuations slower than a block: 20 % of the variance for blocks of 10
    barostat times)."""
    kept = volumes[:, burn:]
    parts = np.array_split(kept, blocks, axis=1)
    means = np.concatenate([p.mean(1) for p in parts])
    variances = np.concatenate([((p - kept.mean()) ** 2).mean(1) for p in parts])
    return means, variances


def _estimate(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error over independent values."""
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def _agree(ours: tuple[float, float], reference: tuple[float, float], sigmas: float = 3.0):
    gap, error = abs(ours[0] - reference[0]), np.hypot(ours[1], reference[1])
    assert gap < sigmas * error, (ours, reference)


def _compare_with_mtk(morse, cell: str) -> tuple:
    """(ours, MTK), each (block means, block variances): 6 batched walkers and 4 ASE runs of a
    32-atom cell at 300 K and 0 GPa, 1600 steps of 4 fs, the first 300 steps dropped."""
    start, steps, burn = _crystal((2, 2, 2)), 1600, 60
    ours = _blocks(_batched_volumes(morse, start, 6, steps, npt_cell=cell), burn, 2)
    mtk = _blocks(_mtk_volumes(start, 4, steps, cell), burn, 2)
    print(
        f"{cell}: <V> ours {_estimate(ours[0])} MTK {_estimate(mtk[0])}; var V ours "
        f"{_estimate(ours[1])} MTK {_estimate(mtk[1])} (A^3, A^6; mean, standard error)"
    )
    return ours, mtk


def test_isotropic_volume_matches_ase_mtk(morse):
    """32-atom Cu cell: mean volume and volume variance of the batched engine (stochastic cell
    rescaling, Langevin) and of ASE's IsotropicMTKNPT (Nose-Hoover chains) on ASE's Morse agree
    within 3 combined standard errors; each error is below 0.3 of what it measures, so the
    test can fail. (Nose-Hoover chains on a small crystal are slow to mix: the MTK runs'
    variances differ by 30 % from run to run, which sets the tolerance.)"""
    ours, mtk = _compare_with_mtk(morse, "isotropic")
    for a, b in zip(ours, mtk):
        _agree(_estimate(a), _estimate(b))
        assert max(_estimate(a)[1], _estimate(b)[1]) < 0.3 * _estimate(mtk[1])[0]


def test_full_cell_mean_volume_matches_ase_mtk(morse):
    """Full cell, same set-up: the mean volumes agree within 3 combined standard errors. Not
    the variance: ASE 3.29's MTKNPT gives this cubic crystal a volume variance more than twice
    its IsotropicMTKNPT's (15 +- 2.4 against 6.7 +- 1.3 A^6 here), where the two must agree
    (volume and shear strains decouple in a cubic crystal), and it fails the fluctuation
    relation: its mean volumes at -5 and +5 GPa give a bulk modulus of 267 GPa, its volume
    fluctuations (per run) 77 GPa. Ours is checked by that relation and against the isotropic
    mode instead (tests below)."""
    ours, mtk = _compare_with_mtk(morse, "full")
    _agree(_estimate(ours[0]), _estimate(mtk[0]))
    assert _estimate(ours[0])[1] < 0.2 * np.sqrt(_estimate(ours[1])[0])


@pytest.mark.parametrize("cell", ["isotropic", "full"])
def test_compressibility_from_fluctuations_equals_dv_dp(morse, cell):
    """kappa = <dV^2> / (kT <V>) (the variance averaged over the two runs) equals
    -(1/V) dV/dP from the mean volumes at -4 and +4 GPa (central difference; the two agree to
    O(dP^2), about 1 % for a bulk modulus of ~260 GPa), within 3 combined standard errors.
    Exact for any sampler of exp(-P V / kT) times a weight free of P, so it checks the pressure
    coupling without ASE. 32-atom cell, 6 walkers per pressure."""
    kT, dp = units.kB * TEMPERATURE, 4.0 * units.GPa
    start = _crystal((2, 2, 2))
    runs = [
        _blocks(_batched_volumes(morse, start, 6, 1600, pressure=p, npt_cell=cell), 60, 2)
        for p in (-4.0, 4.0)
    ]
    (low, low_error), (high, high_error) = _estimate(runs[0][0]), _estimate(runs[1][0])
    middle = 0.5 * (low + high)
    from_means = (low - high) / (2 * dp * middle)
    means_error = np.hypot(low_error, high_error) / (2 * dp * middle)
    variance, variance_error = _estimate(np.concatenate([runs[0][1], runs[1][1]]))
    from_fluctuations = variance / (kT * middle)
    print(
        f"{cell}: kappa from dV/dP {from_means:.4g} +- {means_error:.2g}, from <dV^2> "
        f"{from_fluctuations:.4g} +- {variance_error / (kT * middle):.2g} A^3/eV"
    )
    _agree((from_fluctuations, variance_error / (kT * middle)), (from_means, means_error))
    assert means_error < 0.2 * from_means  # the two pressures are far enough apart to say it


def test_unbiased_isotropic_and_full_cell_sample_the_same_volumes(morse_uq):
    """Bias strength tau = 0 through the biased calculator (uncertainty model, the bias
    computed and scaled by zero): a cubic 32-atom Cu crystal has the same volume distribution
    (mean and variance) with the full cell as with the volume only (its response to a
    hydrostatic pressure is isotropic), within 3 combined standard errors; 8 walkers each."""
    start, bias = _crystal((2, 2, 2)), BiasConfig(tau=0.0)
    results = {}
    for cell in ("isotropic", "full"):
        config = replace(NPT, steps=1600, npt_cell=cell)
        runs = explore(Calculator(morse_uq, bias=bias), start, config, walkers=8)
        assert set(runs.stop_reasons) == {"completed"}
        assert runs.walkers[0].frames[-1].info[keys.BIAS_STRENGTH] == 0.0
        volumes = np.array([[f.get_volume() for f in w.frames] for w in runs.walkers])
        results[cell] = _blocks(volumes, 60, 2)
        print(
            f"tau = 0, {cell}: <V> {_estimate(results[cell][0])}, var V "
            f"{_estimate(results[cell][1])}"
        )
    for a, b in zip(results["isotropic"], results["full"]):
        _agree(_estimate(a), _estimate(b))


@pytest.mark.parametrize("cell", ["isotropic", "full"])
def test_the_biased_stress_drives_the_cell(morse_uq, cell):
    """One step of one walker with a strong absolute bias: the cell (and positions) equal
    barostat.baoa by hand on the walker's stream (seed sequence (seed, 0): velocities, then
    cell noise, then particle noise) with the biased calculator's stress and forces; with the
    unbiased stress the cell would differ."""
    start, bias = _crystal(a=3.5), BiasConfig(tau=5.0, fade_kt=None)
    config = replace(NPT, steps=1, sample_every=1, npt_cell=cell, seed=4, pdamp=20.0)
    (walker,) = run_batched(morse_uq, bias, walker_specs(Calculator(morse_uq), start, config))
    atoms = start.copy()
    rng = np.random.default_rng([4, 0])
    thermalize_momenta(atoms, TEMPERATURE, rng=rng)
    Stationary(atoms)
    isotropic = cell == "isotropic"
    cell_noise = rng.standard_normal() if isotropic else barostat.symmetric_noise(rng)
    noise = torch.as_tensor(rng.standard_normal((len(atoms), 3)))
    calc = Calculator(morse_uq, bias=bias)
    calc.calculate(atoms, ["energy", "forces", "stress"])

    def step(stress):
        return barostat.baoa(
            torch.as_tensor(atoms.positions),
            torch.as_tensor(atoms.get_momenta()),
            torch.as_tensor(calc.results[keys.FORCES]),
            torch.as_tensor(atoms.get_masses()),
            torch.as_tensor(atoms.cell.array)[None],
            torch.as_tensor(voigt_6_to_full_3x3_stress(stress))[None],
            torch.zeros(len(atoms), dtype=torch.long),
            noise,
            torch.as_tensor(np.array([cell_noise])),
            dt=DT * units.fs,
            friction=1 / (TDAMP * units.fs),
            kT=units.kB * TEMPERATURE,
            pressure=0.0,
            compressibility=1 / (BULK * units.GPa),
            tau=20.0 * units.fs,
            isotropic=isotropic,
        )

    positions, _, cells = step(calc.results[keys.STRESS])
    frame = walker.frames[0]
    np.testing.assert_allclose(frame.cell.array, cells[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(frame.positions, positions.numpy(), atol=1e-10)
    _, _, unbiased = step(calc.results[keys.UNBIASED_STRESS])
    assert np.abs(unbiased[0].numpy() - frame.cell.array).max() > 1e-6


@pytest.mark.parametrize("cell", ["isotropic", "full"])
def test_a_walker_in_a_batch_follows_its_own_stream(morse_uq, cell):
    """Three walkers (different cells) with a relative bias in one batch follow exactly the
    trajectories (positions and cells) they follow each alone (same seed sequence)."""
    starts = [_crystal(seed=1), _crystal(seed=2, a=3.55), _crystal(seed=3, a=3.62)]
    bias = BiasConfig(tau_rel=0.3, window=3, fade_kt=None)
    config = replace(NPT, steps=12, sample_every=3, npt_cell=cell, pdamp=50.0)
    specs = walker_specs(Calculator(morse_uq, bias=bias), starts, config, walkers=3)
    together = run_batched(morse_uq, bias, specs)
    for spec, walker in zip(specs, together):
        (alone,) = run_batched(morse_uq, bias, [spec])
        assert len(walker.frames) == len(alone.frames) == 4
        for ours, reference in zip(walker.frames, alone.frames):
            np.testing.assert_allclose(ours.positions, reference.positions, atol=1e-10)
            np.testing.assert_allclose(ours.cell.array, reference.cell.array, atol=1e-12)
    assert np.abs(together[0].frames[-1].cell.array - starts[0].cell.array).max() > 1e-4


def test_cell_shear_is_the_deviatoric_log_strain():
    """cell_shear: a pure shear diag(e^a, e^-a, 1) gives a; a rotation, a uniform scaling and
    a rotated scaled cell give 0."""
    first = _crystal().cell.array @ np.array([[1, 0.1, 0], [0, 1, 0.2], [0, 0, 1.0]])
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    assert cell_shear(first, first @ np.diag([np.exp(0.3), np.exp(-0.3), 1])) == pytest.approx(0.3)
    for cell in (first @ rotation, 1.3 * first, 0.8 * first @ rotation):
        assert cell_shear(first, cell) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("engine", ["batched", "ase"])
def test_a_collapsing_cell_is_a_blow_up_and_starts_again(morse, tmp_path, engine):
    """At 60 GPa the cell shrinks below min_volume_ratio 0.93 of the start: the walker stops
    with "cell_volume" (no frame of the collapsed cell is kept; the trajectory holds whole
    frames only) and, with restarts 1, starts again from its start."""
    watchdog = replace(QUIET, min_volume_ratio=0.93)
    config = replace(NPT, steps=60, sample_every=2, pressure=60.0, watchdog=watchdog, engine=engine)
    config = replace(config, pdamp={"batched": 200.0, "ase": 3000.0}[engine])  # MTK: a mass
    trajectory = tmp_path / "walk.extxyz"
    runs = explore(Calculator(morse), _crystal(), config, trajectory=trajectory)
    walker = runs.walkers[0]
    assert walker.stop_reason == "cell_volume" and "min_volume_ratio 0.93" in walker.message
    first = _crystal().get_volume()
    assert all(f.get_volume() >= 0.93 * first for f in walker.frames)
    assert walker.frames and len(read(trajectory, ":")) == len(walker.frames)
    again = explore(Calculator(morse), _crystal(), replace(config, restarts=1))
    assert [r["reason"] for r in again.walkers[0].restarts] == ["cell_volume"]


def test_a_sheared_cell_is_a_blow_up(morse_uq):
    """A strong bias shears the full cell past max_shear: "cell_shear"."""
    watchdog = replace(QUIET, max_shear=0.01)
    config = replace(NPT, steps=200, npt_cell="full", pdamp=20.0, watchdog=watchdog)
    runs = explore(
        Calculator(morse_uq, bias=BiasConfig(tau=5.0, fade_kt=None)), _crystal(a=3.5), config
    )
    assert runs.stop_reasons == ["cell_shear"]
    assert "max_shear 0.01" in runs.walkers[0].message


def test_npt_bad_input_is_a_clear_error(morse, tmp_path):
    """Non-periodic, partly periodic and flat cells, a zero or negative barostat time or bulk
    modulus: a ValueError naming what is wrong, before any file is written."""
    molecule = _crystal()
    molecule.pbc = False
    slab = _crystal()
    slab.pbc = [True, True, False]
    flat = _crystal()
    flat.cell[2] = [0, 0, 0]
    trajectory = tmp_path / "t.extxyz"
    for atoms, match in (
        (molecule, r"NPT needs periodic cells.*\[False, False, False\] although it has a cell"),
        (slab, r"NPT needs periodic cells.*\[True, True, False\]"),
        (flat, "NPT needs a cell of three independent vectors"),
    ):
        for engine in ("batched", "ase"):
            with pytest.raises(ValueError, match=match):
                explore(
                    Calculator(morse), atoms, replace(NPT, engine=engine), trajectory=trajectory
                )
    specs = walker_specs(Calculator(morse), _crystal(), replace(NPT, ensemble="nvt"))
    specs[0].config = replace(NPT, steps=2)
    specs[0].start = slab
    with pytest.raises(ValueError, match="NPT needs periodic cells"):
        run_batched(morse, None, specs)
    for name in ("pdamp", "tdamp", "bulk_modulus"):
        for value in (0.0, -1.0):
            with pytest.raises(ValueError, match=f"{name} must be a number > 0"):
                replace(NPT, **{name: value})
    assert not trajectory.exists()
