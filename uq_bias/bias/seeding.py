"""Seeding a walker's relative-strength window without running MD.

So that the bias acts at the strength tau_rel asks for from a walker's first step, its window is
filled with an estimate measured on frames where it will walk (e.g. its start structure):

    <|F|>  ~  mean_frames mean_i |F_i|,        <|w dU/dr|>  ~  mean_frames mean_i |w_i dU/dr_i|

(eV/A), and for the stress window the means over the periodic frames of ||sigma||_F and
||w_S (1/V) dU/deps||_F (eV/A^3); :class:`~uq_bias.bias.strength.RelativeStrength` then pushes
these seeded samples out with real ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from ase import Atoms

from uq_bias.bias.biased import Bias, _float64
from uq_bias.bias.config import BiasConfig
from uq_bias.bias.strength import stress_window_sample, window_sample
from uq_bias.graph import Graph
from uq_bias.uncertainty.base import UncertaintyModel


def sample(bias: Bias, model: UncertaintyModel, graph: Graph) -> dict[str, float]:
    """The window sample of the one structure in ``graph`` under ``bias``, without touching its
    window:
    for seeding a :class:`RelativeStrength`. A dict with ``force_mean`` and ``bias_mean``
    (mean |F_i|, mean |w_i dU/dr_i|, eV/A) and, for a periodic cell, ``stress_mean`` and
    ``bias_stress_mean`` (||sigma||_F, ||w_S (1/V) dU/deps||_F, eV/A^3).
    ``graph.positions`` (and ``graph.strain`` for a periodic cell) must require grad."""
    stress = bool(graph.strain.requires_grad)
    out = model(graph, forces=True, stress=stress)
    forces, du_dr, sigma, du_deps = map(_float64, bias._gradients(out, graph, stress))
    du_dr = bias._project(du_dr, graph)
    atom_weight = bias.table.to(forces)[graph.atomic_numbers]
    force_mean, bias_mean = window_sample(forces, du_dr, atom_weight)
    sample = {"force_mean": force_mean, "bias_mean": bias_mean}
    if du_deps is not None and bool(graph.periodic.all()):
        w_s = float(atom_weight.mean())
        stress_mean, bias_stress_mean = stress_window_sample(sigma[0], du_deps[0], w_s)
        sample |= {"stress_mean": stress_mean, "bias_stress_mean": bias_stress_mean}
    return sample


def estimate_state(
    model: UncertaintyModel, frames: Sequence[Atoms], config: BiasConfig
) -> dict[str, list[float]]:
    """An estimate of the window for seeding a :class:`RelativeStrength` without running MD, as
    a one-sample state for :meth:`RelativeStrength.from_state`: ``forces`` and ``bias``, the
    mean over ``frames`` (e.g. the start structures) of each frame's <|F|> and <|w dU/dr|>
    (eV/A) under ``model``; with ``config.tau_rel_stress`` > 0 and periodic frames also
    ``stress`` and ``bias_stress``, the mean over the periodic frames of ||sigma||_F and
    ||w_S (1/V) dU/deps||_F (eV/A^3)."""
    if not frames:
        raise ValueError("estimate_state: needs at least one frame")
    relative = replace(config, tau=None, tau_rel=config.tau_rel or 1.0, split=True)
    bias = Bias(relative, model)
    samples = []
    for atoms in frames:
        stress = bool(atoms.pbc.all())
        graph = model.graph(atoms).requires_grad_(positions=True, strain=stress)
        samples.append(sample(bias, model, graph))
    state = {
        "forces": [float(np.mean([s["force_mean"] for s in samples]))],
        "bias": [float(np.mean([s["bias_mean"] for s in samples]))],
    }
    periodic = [s for s in samples if "stress_mean" in s]
    if config.tau_rel_stress and periodic:
        state["stress"] = [float(np.mean([s["stress_mean"] for s in periodic]))]
        state["bias_stress"] = [float(np.mean([s["bias_stress_mean"] for s in periodic]))]
    return state


def estimate_window(
    model: UncertaintyModel, frames: Sequence[Atoms], config: BiasConfig
) -> tuple[float, float]:
    """An estimate of the window means <|F|> and <|w dU/dr|> (eV/A) for seeding a
    :class:`RelativeStrength` without running MD: the mean over ``frames`` (e.g. the start
    structures and the labelled frames) of each frame's window sample under ``model`` (the
    force part of :func:`estimate_state`)."""
    state = estimate_state(model, frames, replace(config, tau_rel_stress=None))
    return state["forces"][0], state["bias"][0]
