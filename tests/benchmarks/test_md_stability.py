"""The stability test's survival curves on a Morse dimer, whose bond either holds or breaks
by physics: 15 k_B T deep at 300 K (no run breaks in 0.5 ps), shallow against k_B T at 20000 K."""

import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from md_stability import Survival, curve_table, survival  # noqa: E402
from pair_potentials import MORSE, morse_adapter  # noqa: E402


def test_curve_and_median_are_the_step_function_of_the_failure_times():
    s = Survival(300.0, runs=4, steps=2000, failures=[(0, 400, "x"), (3, 1200, "y")])
    # failures at 0.2 ps and 0.6 ps of a 1 ps run
    assert s.curve(np.array([0.1, 0.2, 0.5, 0.6, 1.0])) == pytest.approx([1, 0.75, 0.75, 0.5, 0.5])
    assert s.median_failure_ps == pytest.approx(0.6)
    assert s.fraction == pytest.approx(0.5)
    assert Survival(300.0, runs=4, steps=2000, failures=[(0, 400, "x")]).median_failure_ps is None
    rows = curve_table([("m", s)], points=2)
    assert rows[2] == "| m | 300 | 0.75 | 0.50 | 0.60 |"


def test_morse_dimer_survives_cold_and_breaks_hot():
    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, MORSE["r0"]]])
    cold, hot = survival(morse_adapter(), dimer, (300.0, 20000.0), runs=16, steps=1000)
    assert cold.failures == []
    assert hot.fraction < 0.5  # k_B T = 1.7 eV against a 0.4 eV well: most break
    assert all("bond" in why for _, _, why in hot.failures)
    assert hot.median_failure_ps is not None and 0 < hot.median_failure_ps <= 0.5
