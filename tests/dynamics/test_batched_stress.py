"""The stress of the batched engine (``uq_bias.dynamics.run_batched``): the biased stress of every
walker's kept frames against finite differences of the biased energy, and the stress window of
``tau_rel_stress`` per walker against a plain calculator's."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.fd import calculate_numerical_stress

from uq_bias import keys
from uq_bias.bias import BiasConfig, RelativeStrength
from uq_bias.calculator import Calculator
from uq_bias.dynamics import ExploreConfig, run_batched, walker_specs
from uq_bias.dynamics.watchdog import WatchdogConfig

QUIET = WatchdogConfig(min_distance=None, max_force=None)


def _config(steps: int) -> ExploreConfig:
    return ExploreConfig(
        steps=steps, sample_every=1, temperature=300.0, watchdog=QUIET, progress=False, seed=5
    )


def test_batched_biased_stress_is_the_strain_derivative_of_the_biased_energy(
    fitted_ensemble, cu8_frames
):
    """Three periodic Cu/Al walkers in one batch, tau_rel seeded so tau > 0 from step 1 and no
    tau_rel_stress: each walker's stress at its kept frames equals (1/V) dE_b/deps by ASE's
    central finite differences of E_b = E - tau U at the tau that walker used there."""
    bias = BiasConfig(tau_rel=0.3, window=4)
    seeded = {"forces": [1.0], "bias": [0.05]}
    starts = [a.copy() for a in cu8_frames[:3]]
    specs = walker_specs(
        Calculator(fitted_ensemble, bias=bias),
        starts,
        _config(2),
        walkers=3,
        bias_states=[seeded] * 3,
    )
    runs = run_batched(fitted_ensemble, bias, specs)
    for run in runs:
        assert len(run.frames) == 2
        frame = run.frames[-1]
        tau = frame.info[keys.BIAS_STRENGTH]
        assert tau > 0 and frame.info[keys.BIAS_STRESS_STRENGTH] == tau
        assert np.abs(frame.info[keys.BIAS_STRESS]).max() > 1e-6
        probe = frame.copy()
        probe.calc = Calculator(fitted_ensemble, bias=BiasConfig(tau=tau))
        numerical = calculate_numerical_stress(probe, eps=1e-5)
        np.testing.assert_allclose(frame.info["model_stress"], numerical, atol=1e-8)


def test_batched_stress_window_equals_the_calculator(fitted_ensemble, cu8_frames):
    """With tau_rel_stress each batched walker keeps its own stress window: tau_sigma and the
    biased stress at every kept frame equal a fresh calculator's on that walker's own
    configurations, in order, and the windows handed back are the calculator's."""
    bias = BiasConfig(tau_rel=0.3, window=3, tau_rel_stress=0.4)
    seeded = {"forces": [1.0], "bias": [0.05], "stress": [0.02], "bias_stress": [0.001]}
    starts = [a.copy() for a in cu8_frames[:2]]
    specs = walker_specs(
        Calculator(fitted_ensemble, bias=bias),
        starts,
        _config(4),
        walkers=2,
        bias_states=[seeded, None],
    )
    runs = run_batched(fitted_ensemble, bias, specs)
    taus = []
    for run, spec in zip(runs, specs):
        reference = Calculator(fitted_ensemble, bias=bias)
        if spec.bias_state is not None:
            reference.bias.relative = RelativeStrength.from_state(
                spec.bias_state, 0.3, reference.bias.relative.window, 0.4
            )
        reference.calculate(spec.start.copy(), ["stress"])  # step 0
        for frame in run.frames:
            reference.calculate(frame.copy(), ["stress"])
            r = reference.results
            np.testing.assert_allclose(frame.info["model_stress"], r[keys.STRESS], atol=1e-12)
            np.testing.assert_allclose(
                frame.info[keys.BIAS_STRESS_STRENGTH], r[keys.BIAS_STRESS_STRENGTH], rtol=1e-10
            )
            taus.append(frame.info[keys.BIAS_STRESS_STRENGTH])
        for name, values in reference.bias.relative.state().items():
            np.testing.assert_allclose(run.bias_state[name], values, rtol=1e-12)
    assert runs[0].frames[0].info[keys.BIAS_STRESS_STRENGTH] > 0  # the seeded window acts at once
    assert max(taus) > 0
    assert len(runs[1].bias_state["stress"]) == 3


@pytest.mark.parametrize("tau_rel_stress", [0.0])
def test_batched_stress_bias_off(fitted_ensemble, cu8_frames, tau_rel_stress):
    """tau_rel_stress = 0: the batched walkers' stress is the unbiased stress, the forces
    biased."""
    bias = BiasConfig(tau_rel=0.3, window=3, tau_rel_stress=tau_rel_stress)
    seeded = {"forces": [1.0], "bias": [0.05]}
    specs = walker_specs(
        Calculator(fitted_ensemble, bias=bias),
        cu8_frames[0].copy(),
        _config(2),
        walkers=2,
        bias_states=[seeded] * 2,
    )
    for run in run_batched(fitted_ensemble, bias, specs):
        for frame in run.frames:
            np.testing.assert_array_equal(
                frame.info["model_stress"], frame.info[keys.UNBIASED_STRESS]
            )
            assert frame.info[keys.BIAS_STRENGTH] > 0
            assert np.abs(frame.arrays[keys.BIAS_FORCES]).max() > 0
