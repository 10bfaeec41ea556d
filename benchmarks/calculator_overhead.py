"""Time per energy+forces call: uq_bias calculators against the reference on the same model.

Rows compare, in one run and on the same model and structures:
  plain   uq_bias.Calculator(model)  vs  mace.calculators.MACECalculator(model)  (target <= 1.05)
  gradient features (energy, forces, energy and per-atom uncertainty) vs plain, same model
          (target <= 1.10), for exact last-layer and all-readout (sketched, p = 512) features
  4-member ensemble (members share one graph) vs plain on one member          (target <= 4.0)
  biased (energy, forces, stress, uncertainties, bias) vs the same uncertainty calculator
          without bias (target <= 1.10 for gradient features): gradient features with the
          unbiased/bias split (two backward passes) and without (split=False, one pass),
          and the ensemble (closed-form bias gradient)
  relative bias (tau_rel, uniform weights; window seeded so tau > 0 from the first call) vs the
          same uncertainty calculator: split on every call, and split=False, split_every=10
          (two passes on every 10th call, one between); mean over the calls (a multiple of 10),
          so the split calls count                                            (target <= 1.10)

Run: python benchmarks/calculator_overhead.py [--preset small] [--repeats 30]
        [--rows plain uncertainty bias relative]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from ase.build import bulk
from harness.quiet import quiet

from uq_bias import Calculator
from uq_bias.campaign.systems import ALANINE_DIPEPTIDE_SMILES, from_smiles
from uq_bias.training.build import build_mace


def one_call(atoms, stress: bool) -> float:
    """Wall time of one energy+forces(+stress) call after a small move (so nothing is cached)."""
    atoms.positions += np.random.default_rng(len(atoms)).normal(scale=1e-3, size=(len(atoms), 3))
    start = time.perf_counter()
    atoms.get_potential_energy()
    atoms.get_forces()
    if stress:
        atoms.get_stress()
    return time.perf_counter() - start


def compare(
    label: str, system: str, ours, reference, atoms, repeats: int, stress=False, mean=False
):
    """Print one row: median ms of both and their ratio ours/reference (``mean``: the mean, for
    calculators whose cost differs from call to call, such as a split step every m-th call).

    Calls alternate between the two calculators, so load from other processes hits both alike.
    """
    pair = [atoms.copy(), atoms.copy()]
    pair[0].calc, pair[1].calc = ours, reference
    times = ([], [])
    for k in range(repeats + 3):
        for side in (0, 1):
            elapsed = one_call(pair[side], stress)
            if k >= 3:  # warm-up calls are not counted
                times[side].append(elapsed)
    average = statistics.mean if mean else statistics.median
    t_ours, t_ref = (average(t) for t in times)
    print(f"{label:<34} {system:<22} {1e3 * t_ours:9.2f} {1e3 * t_ref:9.2f} {t_ours / t_ref:7.3f}")
    return t_ours / t_ref


def uncertainty_rows(model, name: str, atoms, repeats: int, preset: str) -> None:
    """Rows for the uncertainty models against the plain calculator on the same model."""
    from uq_bias.uncertainty import Ensemble, GradientFeatureUncertainty

    train = []
    for seed in range(4):  # the posterior is fitted on rattled copies (no labels needed)
        frame = atoms.copy()
        frame.rattle(0.05, seed=seed)
        train.append(frame)
    for features in ("last_layer", "all_readouts"):
        unc = GradientFeatureUncertainty(model, features=features).fit(train)
        label = f"gradient {features} vs plain"
        compare(label, name, Calculator(unc), Calculator(model), atoms, repeats)
    members = [model] + [
        build_mace([1, 6, 7, 8, 13, 29], cutoff=5.0, preset=preset, seed=s) for s in (1, 2, 3)
    ]
    ensemble = Calculator(Ensemble(members))
    compare("ensemble K=4 vs one member", name, ensemble, Calculator(model), atoms, repeats)


def bias_rows(model, name: str, atoms, repeats: int, preset: str) -> None:
    """Rows for the biased calculator against the uncertainty calculator on the same model."""
    from uq_bias import BiasConfig
    from uq_bias.uncertainty import Ensemble, GradientFeatureUncertainty

    stress = bool(atoms.pbc.all())
    unc = GradientFeatureUncertainty(model).fit(_rattled(atoms))
    for label, bias in (
        ("biased gradient vs gradient", BiasConfig(tau=1.0, project="none", fade_kt=None)),
        (
            "biased gradient split=False",
            BiasConfig(tau=1.0, split=False, project="none", fade_kt=None),
        ),
    ):
        ours = Calculator(unc, bias=bias)
        compare(label, name, ours, Calculator(unc), atoms, repeats, stress)
    members = [model] + [
        build_mace([1, 6, 7, 8, 13, 29], cutoff=5.0, preset=preset, seed=s) for s in (1, 2, 3)
    ]
    ensemble = Ensemble(members)
    ours = Calculator(ensemble, bias=BiasConfig(tau=1.0, project="none", fade_kt=None))
    compare("biased ensemble vs ensemble", name, ours, Calculator(ensemble), atoms, repeats, stress)


def relative_rows(model, name: str, atoms, repeats: int) -> None:
    """The relative bias (tau_rel) against the same uncertainty calculator without bias."""
    from uq_bias import BiasConfig
    from uq_bias.uncertainty import GradientFeatureUncertainty

    stress = bool(atoms.pbc.all())
    unc = GradientFeatureUncertainty(model).fit(_rattled(atoms))
    for label, bias in (
        ("tau_rel split (2 passes) [mean]", BiasConfig(tau_rel=0.2, project="none", fade_kt=None)),
        (
            "tau_rel split_every=10 [mean]",
            BiasConfig(tau_rel=0.2, split=False, split_every=10, project="none", fade_kt=None),
        ),
    ):
        ours = Calculator(unc, bias=bias)
        ours.bias.relative.seed(1.0, 0.05)  # a full window: tau = 4 from the first call
        compare(label, name, ours, Calculator(unc), atoms, repeats, stress, mean=True)


def _rattled(atoms):
    """Four rattled copies: the posterior is fitted on them (no labels needed)."""
    train = []
    for seed in range(4):
        frame = atoms.copy()
        frame.rattle(0.05, seed=seed)
        train.append(frame)
    return train


def systems():
    molecule = from_smiles(ALANINE_DIPEPTIDE_SMILES)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)  # 108 atoms
    cell.rattle(0.02, seed=1)
    return [("alanine dipeptide (22)", molecule), ("Cu fcc cell (108)", cell)]


ROWS = ("plain", "uncertainty", "bias", "relative")


def main(argv=None) -> None:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="which groups of rows"
    )
    args = parser.parse_args(argv)
    from mace.calculators import MACECalculator

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_mace([1, 6, 7, 8, 13, 29], cutoff=5.0, preset=args.preset)
    print(f"model: MACE preset {args.preset!r}, float64, {torch.get_num_threads()} threads")
    print(f"{'row':<34} {'system':<22} {'ours ms':>9} {'ref ms':>9} {'ratio':>7}")
    for name, atoms in systems():
        if "plain" in args.rows:
            reference = MACECalculator(models=model, device="cpu", default_dtype="float64")
            compare(
                "plain vs MACECalculator", name, Calculator(model), reference, atoms, args.repeats
            )
        if "uncertainty" in args.rows:
            uncertainty_rows(model, name, atoms, args.repeats, args.preset)
        if "bias" in args.rows:
            bias_rows(model, name, atoms, args.repeats, args.preset)
        if "relative" in args.rows:
            relative_rows(model, name, atoms, args.repeats)


if __name__ == "__main__":
    main()
