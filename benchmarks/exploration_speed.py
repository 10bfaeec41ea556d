"""Exploration throughput: the batched engine against the ASE path, same model and bias.

    python benchmarks/exploration_speed.py [--device cpu] [--preset small] [--steps 10]
        [--threads 1] [--molecule-walkers 1 4 16 64] [--cell-walkers 1 4 16]
        [--npt-walkers 4 16] [--npt-cell full]

For W walkers of alanine dipeptide (22 atoms, ``uq_bias.campaign.systems``) and of a periodic
108-atom Cu cell, one run measures walker-steps per second (W * steps / wall time, step 0's
force call and each walker's set-up included) of

* ``ase``: ``run_walker`` on each walker in turn (what ``explore(..., engine="ase")`` does),
  ASE's Langevin;
* ``batched``: ``run_batched`` (``explore(..., engine="batched")``), all W walkers in one graph
  per MD step;

and, for ``--npt-walkers``, the Cu cell under NPT (0 GPa, ``--npt-cell`` full or isotropic;
the cell moves under the biased stress): ASE's MTK barostat one walker after another against
the batched engine's stochastic cell rescaling. It prints their ratio, beside the ratio the
model alone gives (one single-pass biased force call on W structures one at a time over one
call on a batch of W; the ceiling for the CPU). Same model (a MACE preset, float64, untrained:
speed does not depend on the weights), same uncertainty (gradient features, fitted on rattled
copies of the start) and same bias (tau_rel = 0.2 seeded so it acts from step 1, split=False,
split_every=10: two backward passes on every 10th step). The watchdog is off so that no
walker stops early.
Each rate is the best of ``--repeat`` runs (order alternating, so load from other processes
hits both paths alike). ``--device cuda`` runs both paths on the GPU. Threads default to 1
(set before torch loads).

Measured on a quiet 2-core CPU machine (``--steps 10 --repeat 2 --molecule-walkers 1 4 16
--cell-walkers``, small preset, 1 thread):

    system                      W  ase walker-steps/s   batched   ratio  model alone
    alanine dipeptide (22)      1               20.21     20.77    1.03         0.98
    alanine dipeptide (22)      4               22.64     34.01    1.50         1.44
    alanine dipeptide (22)     16               18.53     34.36    1.85         1.80

The engine reaches what batching gives the model on this CPU (1.80x at W = 16); the issue's
target of 2x at W = 16 is above that ceiling here. No GPU figure yet (none was lent).

NPT, the 108-atom Cu cell, full cell (``--steps 5 --repeat 1 --molecule-walkers
--cell-walkers --npt-walkers 4 16``, a busy 2-core machine, small preset, 1 thread; ase is
MTKNPT, batched is stochastic cell rescaling):

    system                      W  ase walker-steps/s   batched   ratio  model alone
    Cu (108) NPT full           4                2.78      2.20    0.79         0.86
    Cu (108) NPT full          16                1.90      1.98    1.04         0.53

A 108-atom cell is already a large graph (4536 edges at 5 A): on the CPU the batched engine
calls the model on one cell at a time (``batch_edges``), so it can only match the ASE path, as
the model-alone column says; the gain is for many small cells, or on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

if __name__ == "__main__":  # the thread count must be set before torch is imported
    threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
    os.environ["OMP_NUM_THREADS"] = threads

import torch
from ase.build import bulk
from harness.quiet import quiet

from uq_bias import BiasConfig, Calculator
from uq_bias.bias import Bias
from uq_bias.campaign.systems import ALANINE_DIPEPTIDE_SMILES, from_smiles
from uq_bias.dynamics import ExploreConfig, WatchdogConfig, walker_specs
from uq_bias.dynamics.batched import run_batched
from uq_bias.dynamics.walker import run_walker
from uq_bias.training.build import build_mace
from uq_bias.uncertainty import GradientFeatureUncertainty

BIAS = BiasConfig(
    tau_rel=0.2, window=100, split=False, split_every=10, project="none", fade_kt=None
)
SEED_WINDOW = {"forces": [1.0], "bias": [0.05]}  # tau = 0.2 * 1.0 / 0.05 = 4 from step 1


def systems():
    molecule = from_smiles(ALANINE_DIPEPTIDE_SMILES)
    cell = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)  # 108 atoms
    cell.rattle(0.02, seed=1)
    return molecule, cell


def uncertainty_model(preset: str, starts, device: str):
    model = build_mace([1, 6, 7, 8, 29], cutoff=5.0, preset=preset, dtype=torch.float64)
    from uq_bias.models.mace import MACEAdapter

    train = []
    for atoms in starts:
        for seed in range(3):
            frame = atoms.copy()
            frame.rattle(0.05, seed=seed)
            train.append(frame)
    return GradientFeatureUncertainty(MACEAdapter(model)).fit(train).to(device)


def rate(engine: str, model, start, walkers: int, config: ExploreConfig) -> float:
    """Walker-steps per second of one exploration run."""
    calc = Calculator(model, bias=BIAS)
    specs = walker_specs(calc, start, config, walkers=walkers, bias_states=[SEED_WINDOW] * walkers)
    cuda = next(model.parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    begin = time.perf_counter()
    if engine == "batched":
        results = run_batched(model, BIAS, specs)
    else:
        results = [run_walker(spec) for spec in specs]
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - begin
    reasons = {r.stop_reason for r in results}
    if reasons != {"completed"}:
        raise RuntimeError(f"{engine}: walkers stopped early ({reasons}); the rate is not valid")
    return walkers * config.steps / elapsed


def model_ratio(model, start, walkers: int, repeats: int = 3) -> float:
    """The model alone: time of one biased single-pass force call (forward + backward of
    E - tau U, tau = 1) on one structure times W, over the time on a batch of W copies (best of
    ``repeats``): the most that batching the model can give."""
    from uq_bias.calculator import evaluate

    bias = Bias(BiasConfig(tau=1.0, split=False, project="none", fade_kt=None), model)
    stress = bool(start.pbc.all())

    def best(frames) -> float:
        times = []
        for _ in range(repeats + 1):
            graph = model.graph(frames).requires_grad_(positions=True, strain=stress)
            begin = time.perf_counter()
            evaluate(model, bias, graph, stress)
            if next(model.parameters()).device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - begin)
        return min(times[1:])

    return walkers * best([start]) / best([start] * walkers)


def main(argv=None) -> None:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<k> or auto")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many, alternating")
    parser.add_argument("--molecule-walkers", type=int, nargs="*", default=[1, 4, 16, 64])
    parser.add_argument("--cell-walkers", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--npt-walkers", type=int, nargs="*", default=[4, 16])
    parser.add_argument("--npt-cell", default="full", choices=["full", "isotropic"])
    args = parser.parse_args(argv)
    from uq_bias.device import resolve_device

    device = str(resolve_device(args.device))
    molecule, cell = systems()
    model = uncertainty_model(args.preset, [molecule, cell], device)
    no_stops = WatchdogConfig(
        min_distance=None,
        max_force=None,
        min_distance_ratio=None,
        max_bond_stretch=None,
        max_energy_rise_kt=None,
        max_energy_drop_kt=None,
    )
    config = ExploreConfig(
        steps=args.steps, timestep=0.5, watchdog=no_stops, progress=False, seed=1, device=device
    )
    print(
        f"model: MACE preset {args.preset!r}, float64, gradient-feature uncertainty; device "
        f"{device}; {torch.get_num_threads()} thread(s); bias tau_rel={BIAS.tau_rel} "
        f"split=False split_every={BIAS.split_every}; {args.steps} steps of 0.5 fs per walker"
    )
    for engine in ("ase", "batched"):  # warm-up (first-call costs) off the clock
        rate(engine, model, molecule, 1, replace(config, steps=2))
    header = f"{'system':<24} {'W':>4} {'ase walker-steps/s':>19} {'batched':>9} {'ratio':>7}"
    print(header + f" {'model alone':>12}")
    npt = replace(config, ensemble="npt", npt_cell=args.npt_cell)
    for name, start, sizes, settings in (
        ("alanine dipeptide (22)", molecule, args.molecule_walkers, config),
        ("Cu fcc cell (108)", cell, args.cell_walkers, config),
        (f"Cu (108) NPT {args.npt_cell}", cell, args.npt_walkers, npt),
    ):
        for walkers in sizes:
            best = {"ase": 0.0, "batched": 0.0}
            for k in range(args.repeat):  # ase, batched, batched, ase, ...: load hits both
                for engine in ("ase", "batched")[:: 1 if k % 2 == 0 else -1]:
                    best[engine] = max(best[engine], rate(engine, model, start, walkers, settings))
            ase_rate, batched_rate = best["ase"], best["batched"]
            ratio = batched_rate / ase_rate
            alone = model_ratio(model, start, walkers)
            row = f"{name:<24} {walkers:>4} {ase_rate:>19.2f} {batched_rate:>9.2f} {ratio:>7.2f}"
            print(row + f" {alone:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
