"""The options of the bias, declared once (YAML ``exploration.bias``, the ``uq-bias md`` flags and
the docs are generated from them).

Strength: an absolute ``tau`` (eV of bias per eV of uncertainty, dimensionless) or a relative
``tau_rel`` (:mod:`uq_bias.bias.strength`), and optionally a strength of the bias stress on its own
(``tau_rel_stress``); per-element ``weights`` (:mod:`uq_bias.bias.weights`);
how dU/dr is obtained (``gradient``, :mod:`uq_bias.bias.gradients`); the torsional ``project``
(:mod:`uq_bias.bias.projection`); the energy ``fade`` (:mod:`uq_bias.bias.fade`); and whether
the bias terms are reported beside the biased ones (``split``, :mod:`uq_bias.bias.biased`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from uq_bias.bias.weights import atomic_number
from uq_bias.options import option

GradientMode = Literal["auto", "autograd", "closed_form"]
GRADIENT_MODES = get_args(GradientMode)
Projection = Literal["none", "torsions"]
PROJECTIONS = get_args(Projection)
#: tau_rel of a BiasConfig given neither tau nor tau_rel.
DEFAULT_TAU_REL = 0.2


@dataclass(frozen=True)
class BiasConfig:
    """How strongly and where to bias: an absolute ``tau`` or a relative ``tau_rel`` (the
    default, 0.2, when neither is given); ``tau=0`` is plain MD."""

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
        "(and tau_rel when > 0).",
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
        "none",
        "torsions: keep only the part of the bias force that leaves bond lengths and angles "
        "unchanged (molecules; needs split: true); none: the full uncertainty gradient.",
    )
    fade: list[float] | None = option(
        None,
        "[a, b]: fade the bias out as the walker's unbiased energy rises from a to b above the "
        "lowest it has had (full strength below a, none above b); null: never fade.",
        unit="eV/atom",
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
        if self.project != "none" and not self.split:
            raise ValueError(
                "BiasConfig: project='torsions' makes the bias force no gradient of an energy, "
                "so it needs split=True (the bias force on its own on every step)"
            )
        if self.fade is not None:
            fade = list(self.fade)
            ok = len(fade) == 2 and all(np.isfinite(x) for x in fade)
            if not (ok and 0 <= fade[0] < fade[1]):
                raise ValueError(
                    f"BiasConfig: fade must be [a, b] with 0 <= a < b (eV/atom above the "
                    f"walker's lowest energy), got {self.fade!r}"
                )
        for element, weight in self.weights.items():
            atomic_number(element)
            if not (np.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"BiasConfig: weights[{element!r}] must be a finite number >= 0, got {weight}"
                )
