"""The options of the bias, declared once (YAML ``exploration.bias``, the ``uq-bias md`` flags and
the docs are generated from them).

Strength: an absolute ``tau`` (eV of bias per eV of uncertainty, dimensionless) or a relative
``tau_rel`` (:mod:`uq_bias.bias.strength`), and optionally a strength of the bias stress on its own
(``tau_rel_stress``); per-element ``weights`` (:mod:`uq_bias.bias.weights`);
how dU/dr is obtained (``gradient``, :mod:`uq_bias.bias.gradients`); the torsional ``project``
(:mod:`uq_bias.bias.projection`); the energy fade (``fade_kt`` or ``fade``,
:mod:`uq_bias.bias.fade`); and whether the bias terms are reported beside the biased ones
(``split``, :mod:`uq_bias.bias.biased`).

The defaults are the recipe that explores a flexible molecule (``recipes/``): tau_rel 0.1, the
projection on torsions wherever it applies (``project: auto``), and a fade in thermal units,

    [a, b] = fade_kt k_B T,    fade_kt = [1.5, 2.7]  (eV/atom; T the walker's temperature),

which at 300 K (k_B T = 0.02585 eV) is [0.039, 0.070] eV/atom, the values chosen on alanine
dipeptide. A harmonic molecule's potential energy per atom sits 3/2 k_B T above its minimum on
average (equipartition, 3 degrees of freedom per atom), so the bias acts at full strength within
the thermal range and lets go by 1.8 times it; at 1200 K the same recipe fades 4x higher. An
absolute ``fade`` in eV/atom (the spelling before 0.x) overrides ``fade_kt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from ase.units import kB as K_B

from uq_bias.bias.weights import atomic_number
from uq_bias.options import option

GradientMode = Literal["auto", "autograd", "closed_form"]
GRADIENT_MODES = get_args(GradientMode)
Projection = Literal["auto", "none", "torsions"]
PROJECTIONS = get_args(Projection)
#: tau_rel of a BiasConfig given neither tau nor tau_rel.
DEFAULT_TAU_REL = 0.1
#: The default fade in units of k_B T per atom.
DEFAULT_FADE_KT = (1.5, 2.7)


@dataclass(frozen=True)
class BiasConfig:
    """How strongly and where to bias: an absolute ``tau`` or a relative ``tau_rel`` (the
    default, 0.1, when neither is given); ``tau=0`` is plain MD. The energy fade is
    ``fade`` (eV/atom) when given, else ``fade_kt`` times k_B T of the walker's temperature
    (:meth:`fade_range`)."""

    tau: float | None = option(
        None, "Absolute strength tau of E_b = E - tau U (exclusive with tau_rel; 0: no bias)."
    )
    tau_rel: float | None = option(
        None,
        f"Relative strength: tau = tau_rel <|F|>/<|F_bias/tau|> over the window ("
        f"{DEFAULT_TAU_REL} when neither tau nor tau_rel is given).",
    )
    tau_rel_stress: float | None = option(
        None,
        "Relative strength of the bias stress on its own: tau_sigma = tau_rel_stress "
        "<|sigma|>/<|sigma_bias/tau_sigma|> over the window (Frobenius norms; periodic cells). "
        "null: the stress bias has the force strength tau; 0: no stress bias. Needs split: true "
        "(and tau_rel when > 0). <|sigma|> includes the mean stress, about sqrt(3) P0 under "
        "pressure P0, so the stress bias grows with the pressure (in a ladder the high-pressure "
        "walkers are pushed harder).",
    )
    window: int = option(
        100,
        "Distinct configurations averaged for tau_rel (a fresh window is unbiased until full; "
        "campaign walkers start with one measured where they start).",
    )
    weights: dict[str | int, float] = option(
        {}, "Per-element weights of the bias force, e.g. {H: 0.0} (default 1 for every element)."
    )
    gradient: GradientMode = option(
        "auto",
        "How dU/dr is obtained: closed_form (ensembles: -dU/dr = U sum_k dE_k F_k / sum_k dE_k^2), "
        "autograd, or auto (closed form when the model gives member forces).",
    )
    project: Projection = option(
        "auto",
        "torsions: keep only the part of the bias force that leaves bond lengths and angles "
        "unchanged (molecules; needs split: true); none: the full uncertainty gradient; auto: "
        "torsions for each non-periodic structure with a rotatable bond (bond graph), none "
        "elsewhere or with split: false (logged once).",
    )
    fade: list[float] | None = option(
        None,
        "[a, b]: fade the bias out as the walker's unbiased energy rises from a to b above the "
        "lowest it has had (full strength below a, none above b); overrides fade_kt; null: "
        "fade_kt decides.",
        unit="eV/atom",
    )
    fade_kt: list[float] | None = option(
        list(DEFAULT_FADE_KT),
        "The fade [a, b] in units of k_B T per atom at the walker's temperature (300 K: "
        "[0.039, 0.070] eV/atom), used when fade is null; null with fade null: never fade.",
        unit="k_B T/atom",
    )
    split: bool = option(
        True,
        "Report unbiased and bias forces/stress beside the biased ones on every step; false: "
        "only the biased ones from one backward pass (tau_rel: two passes on every "
        "split_every-th step to measure the strength; weights must be all equal).",
    )
    split_every: int = option(
        10,
        "With tau_rel and split=false: measure the mean force and bias-force magnitudes (a "
        "second backward pass) on every this-many-th MD step, single-pass biased steps between.",
        unit="steps",
    )

    def __post_init__(self):
        if self.tau is None and self.tau_rel is None:
            object.__setattr__(self, "tau_rel", DEFAULT_TAU_REL)
        if self.tau is not None and self.tau_rel is not None:
            raise ValueError(
                f"BiasConfig: give exactly one of tau (absolute) or tau_rel (relative), got "
                f"tau={self.tau}, tau_rel={self.tau_rel}"
            )
        for name in ("tau", "tau_rel", "tau_rel_stress"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise ValueError(f"BiasConfig: {name} must be a finite number >= 0, got {value}")
        if self.tau_rel_stress is not None:
            if self.tau_rel_stress > 0 and self.tau_rel is None:
                raise ValueError(
                    f"BiasConfig: tau_rel_stress={self.tau_rel_stress} scales the bias stress "
                    f"against the window of a relative strength, but the force strength is the "
                    f"absolute tau={self.tau}; use tau_rel, or tau_rel_stress=0 (no stress bias)"
                )
            if not self.split:
                raise ValueError(
                    "BiasConfig: tau_rel_stress gives the bias stress its own strength, so the "
                    "biased stress is no strain derivative of E_b and one backward pass over E_b "
                    "cannot give it; use split=True with tau_rel_stress"
                )
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"BiasConfig: window must be an integer >= 1, got {self.window!r}")
        if self.gradient not in GRADIENT_MODES:
            raise ValueError(
                f"BiasConfig: unknown gradient {self.gradient!r}; choose one of {GRADIENT_MODES}"
            )
        if not (isinstance(self.split_every, int) and self.split_every >= 1):
            raise ValueError(
                f"BiasConfig: split_every must be an integer >= 1, got {self.split_every!r}"
            )
        if self.project not in PROJECTIONS:
            raise ValueError(
                f"BiasConfig: unknown project {self.project!r}; choose one of {PROJECTIONS}"
            )
        if self.project == "torsions" and not self.split:
            raise ValueError(
                "BiasConfig: project='torsions' makes the bias force no gradient of an energy, "
                "so it needs split=True (the bias force on its own on every step)"
            )
        for name, unit in (("fade", "eV/atom"), ("fade_kt", "k_B T per atom")):
            value = getattr(self, name)
            if value is None:
                continue
            pair = list(value)
            ok = len(pair) == 2 and all(np.isfinite(x) for x in pair)
            if not (ok and 0 <= pair[0] < pair[1]):
                raise ValueError(
                    f"BiasConfig: {name} must be [a, b] with 0 <= a < b ({unit} above the "
                    f"walker's lowest energy), got {value!r}"
                )
        for element, weight in self.weights.items():
            atomic_number(element)
            if not (np.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"BiasConfig: weights[{element!r}] must be a finite number >= 0, got {weight}"
                )

    def fade_range(self, temperature: float | None) -> tuple[float, float] | None:
        """[a, b] of the fade in eV/atom: ``fade`` when given, else ``fade_kt`` k_B T at
        ``temperature`` (K); None when neither applies (no fade, or fade_kt without a
        temperature above 0 K: a bare calculator does not know its thermostat)."""
        if self.fade is not None:
            return float(self.fade[0]), float(self.fade[1])
        if self.fade_kt is None or temperature is None or temperature <= 0:
            return None
        kt = K_B * float(temperature)
        return self.fade_kt[0] * kt, self.fade_kt[1] * kt
