"""Batched exploration: W walkers advance together, one model call per MD step for all of them.

Every MD step builds one graph of the W walkers still running (on the CPU: chunks of at most
``ExploreConfig.batch_edges`` edges, one graph each), and one forward and one backward pass (two
on the split steps of a relative bias) give every walker's biased forces on the model's device.
What stays per walker: its start, its random stream (numpy, seed sequence (seed, k): the same
stream and initial velocities as the ASE path), its relative-bias window, the watchdog's verdict
(a walker that stops leaves the batch, the others go on), its candidate frames and its
extended-XYZ trajectory. Walkers that blow up with ``ExploreConfig.restarts`` left start again
together in a next batch, each for the steps it has left. Outputs are
:class:`~uq_bias.dynamics.walker.WalkerResult` objects, as on the ASE path. Non-finite
positions stop their walker alone ("non_finite"); an exception from the model stops every
walker still running ("error", with the message).

Integrators: Langevin BAOAB (:mod:`uq_bias.dynamics.langevin`, friction ``friction``) for NVT;
for NPT the same with friction 1/``tdamp`` and a stochastic-cell-rescaling move C of the cell
(:mod:`uq_bias.dynamics.barostat`, time constant ``pdamp``, bulk modulus ``bulk_modulus``,
``npt_cell`` full or isotropic), driven by the stress of the model call, the biased stress
when the MD is biased:

    B C A O A (new forces and stress) B

C comes after the first half kick, where the stress and the forces were computed at the same
positions and cell (its kinetic pressure is the thermostat's N kT / V). Each walker's
stream draws the cell noise (six numbers, one for isotropic) before its particle noise. Cells
that collapse (``WatchdogConfig.min_volume_ratio``, ``max_shear``) stop their walker before the
model sees them. Positions are not wrapped into the cell (as in ASE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

from uq_bias import keys
from uq_bias.bias import Bias, BiasConfig
from uq_bias.calculator import evaluate, split_results
from uq_bias.dynamics import barostat, langevin
from uq_bias.dynamics.walker import (
    WalkerResult,
    WalkerSpec,
    _rng,
    _stop,
    _Writer,
    check_npt_cell,
    joined,
    npt_pressure,
    observe,
    restarted,
)
from uq_bias.dynamics.watchdog import Verdict, Watchdog

#: Graph edges per model call on the CPU when ``ExploreConfig.batch_edges`` is unset. Measured
#: with the small MACE preset, 1 thread (the model alone, one call on W structures against W
#: calls on one): alanine dipeptide (342 edges) 2.1x at W = 16, 1.05x at 32, 0.8x at 64; a
#: 108-atom Cu cell at 5 A (4536 edges) 0.8x at W = 2. Larger graphs only add memory traffic.
CPU_BATCH_EDGES = 6000


@dataclass
class _Walker:
    spec: WalkerSpec
    atoms: Atoms
    rng: np.random.Generator
    writer: _Writer
    result: WalkerResult
    watchdog: Watchdog


def _start(spec: WalkerSpec) -> _Walker:
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    atoms = spec.start.copy()
    atoms.calc = None
    rng = _rng(spec)
    if spec.config.temperature > 0:
        thermalize_momenta(atoms, spec.config.temperature, rng=rng)
        Stationary(atoms)
    steps, trajectory = spec.config.steps, spec.trajectory
    result = WalkerResult(spec.index, [], "completed", steps, trajectory=trajectory)
    watchdog = Watchdog(spec.config.watchdog, spec.config.temperature, npt_pressure(spec.config))
    writer = _Writer(spec.trajectory, append=spec.segment > 0)
    return _Walker(spec, atoms, rng, writer, result, watchdog)


class BatchedForces:
    """Biased forces of a batch of walkers: ``forces(atoms_list)`` -> (F (N, 3) float64 on the
    model's device, one ASE-style results dict per walker).

    The walkers are evaluated in fixed chunks of consecutive walkers (one model call each), at
    most ``batch_edges`` graph edges per chunk at the start (at least one walker), each with its own
    :class:`~uq_bias.bias.Bias` (one relative-strength window per walker; all chunks step
    together, so they split on the same steps). A walker that stops leaves its chunk.

    Args:
        model: an uncertainty model (or a plain adapter without ``bias``).
        bias: a :class:`~uq_bias.BiasConfig` or None.
        sizes: the size of each walker at the start (graph edges, or any additive measure).
        batch_edges: most of ``sizes`` per model call; None: all walkers in one call.
        temperature: the walkers' temperature, K (sets a ``fade_kt`` fade); None: no
            temperature-scaled fade.
    """

    def __init__(
        self,
        model,
        bias: BiasConfig | None,
        sizes: Sequence[int],
        batch_edges=None,
        temperature: float | None = None,
    ):
        self.model = model
        self.counts = _chunk_counts(sizes, batch_edges)
        self.biases = [
            None if bias is None else Bias(bias, model, walkers=n, temperature=temperature)
            for n in self.counts
        ]

    def _locate(self, k: int) -> tuple[int, int]:
        """(chunk, position in the chunk) of walker k of the batch."""
        for c, n in enumerate(self.counts):
            if k < n:
                return c, k
            k -= n
        raise IndexError(k)

    def keep(self, walkers: Sequence[int]) -> None:
        """Only ``walkers`` (positions in the current batch, increasing) take part from now on."""
        kept: list[list[int]] = [[] for _ in self.counts]
        for k in walkers:
            c, j = self._locate(k)
            kept[c].append(j)
        for bias, positions in zip(self.biases, kept):
            if bias is not None:
                bias.keep(positions)
        pairs = [(bias, len(p)) for bias, p in zip(self.biases, kept) if p]
        self.biases, self.counts = [b for b, _ in pairs], [n for _, n in pairs]

    def _strength(self, k: int):
        bias = self.biases[self._locate(k)[0]]
        if bias is None or bias.strengths is None:
            return None
        return bias.strengths[self._locate(k)[1]]

    def restore(self, states: Sequence[dict | None]) -> None:
        """Start walker k's relative-bias window from ``states[k]`` (see
        ``WalkerSpec.bias_state``; None: an empty window)."""
        from uq_bias.bias import RelativeStrength

        for k, state in enumerate(states):
            old = self._strength(k)
            if state is not None and old is not None:
                c, j = self._locate(k)
                new = RelativeStrength.from_state(state, old.tau_rel, old.window)
                self.biases[c].strengths[j] = new

    def state(self, k: int) -> dict | None:
        """Walker k's (position in the batch) relative-bias window, or None."""
        strength = self._strength(k)
        return None if strength is None else strength.state()

    def __call__(self, frames: Sequence[Atoms]) -> tuple[torch.Tensor, list[dict]]:
        forces, _, results = self.evaluate(frames)
        return forces, results

    def evaluate(
        self, frames: Sequence[Atoms]
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[dict]]:
        """(F (N, 3), sigma (W, 3, 3) or None, results): as calling the object, with the
        (biased, when there is a bias) stress of every walker, float64 on the model's device,
        when all of them are periodic in three directions."""
        forces, stresses, results, start = [], [], [], 0
        for bias, n in zip(self.biases, self.counts):
            graph = self.model.graph(list(frames[start : start + n]))
            stress = bool(graph.periodic.any())
            graph = graph.requires_grad_(positions=True, strain=stress)
            tensors = evaluate(self.model, bias, graph, stress)
            forces.append(tensors[keys.FORCES].detach().to(torch.float64))
            if stress and bool(graph.periodic.all()):
                stresses.append(tensors[keys.STRESS].detach().to(torch.float64))
            results.extend(split_results(tensors, graph))
            start += n
        stress = torch.cat(stresses) if len(stresses) == len(self.counts) else None
        return torch.cat(forces), stress, results


def _chunk_counts(sizes: Sequence[int], limit: int | None) -> list[int]:
    """Walkers per chunk: consecutive walkers while the sum of their sizes fits in ``limit``."""
    if limit is None:
        return [len(sizes)]
    counts, total = [0], 0
    for size in sizes:
        if counts[-1] and total + size > limit:
            counts.append(0)
            total = 0
        counts[-1] += 1
        total += size
    return counts


class _Batch:
    """The integrator state of the running walkers (float64 on ``device``); ``cells`` (W, 3, 3),
    ``stress`` (W, 3, 3) of the last model call (NPT) and ``batch`` (N,), the walker of each
    atom."""

    def __init__(self, walkers: list[_Walker], device: torch.device):
        self.walkers = walkers
        self.device = device
        frames = [w.atoms for w in walkers]
        self.counts = [len(a) for a in frames]

        def tensor(arrays) -> torch.Tensor:
            return torch.as_tensor(np.concatenate(arrays), dtype=torch.float64, device=device)

        self.positions = tensor([a.positions for a in frames])
        self.momenta = tensor([a.get_momenta() for a in frames])
        self.masses = tensor([a.get_masses() for a in frames])
        self.forces = torch.zeros_like(self.positions)
        self.cells = tensor([a.cell.array[None] for a in frames])
        self.stress: torch.Tensor | None = None
        self._index()

    def _index(self) -> None:
        counts = torch.as_tensor(self.counts, dtype=torch.long, device=self.device)
        self.batch = torch.repeat_interleave(
            torch.arange(len(self.counts), device=self.device), counts
        )

    def noise(self) -> torch.Tensor:
        """(N, 3) standard normal numbers, each walker's from its own stream."""
        draws = [w.rng.standard_normal((n, 3)) for w, n in zip(self.walkers, self.counts)]
        return torch.as_tensor(np.concatenate(draws), device=self.device)

    def cell_noise(self, isotropic: bool) -> torch.Tensor:
        """The barostat's noise, each walker's from its own stream: xi (W,) (isotropic) or
        Xi (W, 3, 3) (:func:`~uq_bias.dynamics.barostat.symmetric_noise`)."""
        if isotropic:
            draws = [w.rng.standard_normal() for w in self.walkers]
        else:
            draws = [barostat.symmetric_noise(w.rng) for w in self.walkers]
        return torch.as_tensor(np.array(draws), dtype=torch.float64, device=self.device)

    def sync_positions(self) -> None:
        """Copy the positions (and cells) back into each walker's Atoms (one transfer)."""
        split = np.cumsum(self.counts)[:-1]
        cells = self.cells.cpu().numpy()
        for k, (walker, r) in enumerate(
            zip(self.walkers, np.split(self.positions.cpu().numpy(), split))
        ):
            walker.atoms.set_cell(cells[k], scale_atoms=False)
            walker.atoms.positions = r

    def sync_momenta(self) -> None:
        split = np.cumsum(self.counts)[:-1]
        for walker, p in zip(self.walkers, np.split(self.momenta.cpu().numpy(), split)):
            walker.atoms.set_momenta(p, apply_constraint=False)

    def keep(self, positions: list[int]) -> None:
        """Keep the walkers at ``positions`` of the batch (their atoms, in that order)."""
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        ranges = [np.arange(offsets[k], offsets[k + 1]) for k in positions]
        index = np.concatenate(ranges or [[]])
        index = torch.as_tensor(index, dtype=torch.long, device=self.device)
        walkers = torch.as_tensor(positions, dtype=torch.long, device=self.device)
        self.walkers = [self.walkers[k] for k in positions]
        self.counts = [self.counts[k] for k in positions]
        for name in ("positions", "momenta", "masses", "forces"):
            setattr(self, name, getattr(self, name)[index])
        self.cells = self.cells[walkers]
        if self.stress is not None:
            self.stress = self.stress[walkers]
        self._index()


def run_batched(model, bias: BiasConfig | None, specs: Sequence[WalkerSpec]) -> list[WalkerResult]:
    """Run the walkers of ``specs`` (one :class:`ExploreConfig` for all) as one batch, on the
    config's ``device`` ("auto", "cpu", "cuda[:k]"; None: where the model is; the model moves).

    Args:
        model: the uncertainty model (an adapter for unbiased MD without uncertainty).
        bias: the bias, or None.
        specs: the walkers (their ``calculator`` factories are not used).
    Returns:
        the walkers' results in the order of ``specs``.
    """
    from uq_bias.device import resolve_device

    config = specs[0].config
    if any(spec.config != config for spec in specs):
        raise ValueError("run_batched: all walkers of a batch must share one ExploreConfig")
    if config.ensemble == "npt":
        for spec in specs:
            check_npt_cell(spec.start, f"walker {spec.index}")
    target = resolve_device(config.device)
    if target is not None:
        model = model.to(target)
    results = _run_round(model, bias, specs)
    todo = list(range(len(specs)))
    while True:
        todo = [i for i in todo if restarted(specs[i], results[i]) is not None]
        if not todo:
            return results
        again = _run_round(model, bias, [restarted(specs[i], results[i]) for i in todo])
        for i, result in zip(todo, again):
            results[i] = joined(results[i], result)


def _run_round(model, bias: BiasConfig | None, specs: Sequence[WalkerSpec]) -> list[WalkerResult]:
    """One batch of walker segments, each up to its stop."""
    config = specs[0].config
    walkers = [_start(spec) for spec in specs]
    try:
        device = next(model.parameters()).device
        sizes = [model.graph(w.atoms).edge_index.shape[1] for w in walkers]
        edges = _batch_edges(config, device)
        forces = BatchedForces(model, bias, sizes, edges, temperature=config.temperature)
        forces.restore([spec.bias_state for spec in specs])
        batch = _Batch(walkers, device)
        _run(forces, batch, config)
        for k, walker in enumerate(batch.walkers):  # those still running at the end
            walker.result.bias_state = forces.state(k)
    finally:
        for walker in walkers:
            walker.writer.close()
    return [walker.result for walker in walkers]


def _batch_edges(config, device: torch.device) -> int | None:
    """Edges per model call: the config's, else all on a GPU and CPU_BATCH_EDGES on the CPU."""
    if config.batch_edges is not None:
        return config.batch_edges
    return None if device.type == "cuda" else CPU_BATCH_EDGES


def _run(forces: BatchedForces, batch: _Batch, config) -> None:
    from tqdm.auto import tqdm

    dt = config.timestep * units.fs
    kT = units.kB * config.temperature
    npt = config.ensemble == "npt"
    friction = 1 / (config.tdamp * units.fs) if npt else config.friction / units.fs
    total = len(batch.walkers)
    steps = max(config.steps - w.spec.first_step for w in batch.walkers)
    with tqdm(total=steps, desc=f"{total} walkers", disable=not config.progress) as bar:
        _evaluate(forces, batch, 0)
        for step in range(1, steps + 1):
            if not batch.walkers:
                return
            if npt:
                _npt_baoa(batch, config, dt, friction, kT)
            else:
                batch.positions, batch.momenta = langevin.baoa(
                    batch.positions,
                    batch.momenta,
                    batch.forces,
                    batch.masses,
                    batch.noise(),
                    dt=dt,
                    friction=friction,
                    kT=kT,
                )
            _evaluate(forces, batch, step, dt)
            _complete(forces, batch, step, config.steps)
            bar.update(1)
            bar.set_postfix_str(f"{len(batch.walkers)}/{total} running")


def _npt_baoa(batch: _Batch, config, dt: float, friction: float, kT: float) -> None:
    """B C A O A of an NPT step (:func:`~uq_bias.dynamics.barostat.baoa`); the last B follows
    the new forces. Each walker's stream gives its cell noise, then its particle noise."""
    isotropic = config.npt_cell == "isotropic"
    cell_noise = batch.cell_noise(isotropic)
    batch.positions, batch.momenta, batch.cells = barostat.baoa(
        batch.positions,
        batch.momenta,
        batch.forces,
        batch.masses,
        batch.cells,
        batch.stress,
        batch.batch,
        batch.noise(),
        cell_noise,
        dt=dt,
        friction=friction,
        kT=kT,
        pressure=config.pressure * units.GPa,
        compressibility=1 / (config.bulk_modulus * units.GPa),
        tau=config.pdamp * units.fs,
        isotropic=isotropic,
    )


def _evaluate(forces: BatchedForces, batch: _Batch, step: int, dt: float | None = None) -> None:
    """New forces (and the last half kick) for the running walkers at ``step``, then each
    walker's watchdog; walkers that stop leave the batch."""
    broken = _broken(batch)
    batch.sync_positions()
    broken.update(_collapsed(batch, broken))
    if broken:
        _drop(forces, batch, broken, step)
        if not batch.walkers:
            return
    frames = [w.atoms for w in batch.walkers]
    try:
        batch.forces, batch.stress, results = forces.evaluate(frames)
    except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError) as err:
        text = f"{type(err).__name__} from the model: {err}"
        _drop(forces, batch, {k: Verdict("error", text) for k in range(len(frames))}, step)
        return
    if dt is not None:
        batch.momenta = langevin.half_kick(batch.momenta, batch.forces, dt)
        batch.sync_momenta()
    stopped = {}
    for k, (w, result) in enumerate(zip(batch.walkers, results)):
        verdict = observe(w.spec, w.atoms, result, step, w.watchdog, w.writer, w.result)
        if verdict.reason is not None:
            stopped[k] = verdict
    if stopped:
        _drop(forces, batch, stopped, step, record=False)


def _complete(forces: BatchedForces, batch: _Batch, step: int, steps: int) -> None:
    """Restarted walkers that have run their last step leave the batch ("completed")."""
    done = [k for k, w in enumerate(batch.walkers) if w.spec.first_step + step >= steps]
    if done:
        _drop(forces, batch, dict.fromkeys(done), step, record=False)


def _broken(batch: _Batch) -> dict[int, Verdict]:
    """Walkers whose positions or momenta are no longer finite (the step blew up)."""
    finite = torch.isfinite(batch.positions).all(1) & torch.isfinite(batch.momenta).all(1)
    per_walker = torch.split(finite, batch.counts)
    return {
        k: Verdict("non_finite", "non-finite positions or momenta after the MD step")
        for k, ok in enumerate(per_walker)
        if not bool(ok.all())
    }


def _collapsed(batch: _Batch, broken: dict[int, Verdict]) -> dict[int, Verdict]:
    """Walkers (not already ``broken``) whose cell has collapsed (the watchdog's cell checks)."""
    verdicts = {}
    for k, walker in enumerate(batch.walkers):
        verdict = None if k in broken else walker.watchdog.collapsed(walker.atoms)
        if verdict is not None:
            verdicts[k] = verdict
    return verdicts


def _drop(
    forces: BatchedForces, batch: _Batch, stopped: dict, step: int, record: bool = True
) -> None:
    """Stop the walkers in ``stopped`` (position in batch -> verdict); the rest go on."""
    for k, verdict in stopped.items():
        if record:
            _stop(batch.walkers[k].result, verdict, batch.walkers[k].spec.first_step + step)
        batch.walkers[k].result.bias_state = forces.state(k)
    keep = [k for k in range(len(batch.walkers)) if k not in stopped]
    batch.keep(keep)
    forces.keep(keep)
