"""What a campaign explored and labelled, measured as coverage of CV space per iteration.

Row k belongs to iteration k's model: it was trained on the frames labelled before iteration k
(the initial frames and the batches of iterations 1..k-1), which were picked from the frames the
walkers of iterations 1..k-1 kept. So, per row:

* ``explored``: coverage of the frames the walkers of iterations < k kept (the candidate
  frames ``iterations/NNN/walkers/wNN.extxyz``, one every ``exploration.sample_every`` MD steps,
  plus the frame a walker stopped on) in which the molecule is still in one piece: every bond
  of the campaign's first structure at most 1.5 times the sum of covalent radii long
  (:class:`uq_bias.bonds.BondGraph`). The CVs of a molecule that came apart (a hot walker
  that boiled off a hydrogen) are not a conformation of it, and would fill the CV box with
  noise. A periodic first structure (a crystal, a liquid) has no fixed graph: all frames
  count. None before the first exploration;
* ``explored_all``: the same over every kept frame, broken ones included;
* ``labelled``: coverage of the frames labelled before iteration k (``n_labelled`` of them).

Coverage is :func:`uq_bias.campaign.coverage.coverage` in the box of the CVs (see
:mod:`uq_bias.campaign.cvs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from uq_bias.bonds import BondGraph
from uq_bias.campaign import cvs as cvlib
from uq_bias.campaign.state import CampaignState, read_frames


@dataclass
class CoverageRow:
    """Coverage of CV space at iteration ``iteration`` (see the module docstring).

    Attributes:
        iteration: k, the model's iteration.
        n_labelled: frames labelled before iteration k.
        n_explored: walker frames kept in iterations < k.
        n_broken: of those, frames in which the molecule has come apart.
        explored: coverage of the intact ones (None when there are none).
        explored_all: coverage of all ``n_explored`` (None when there are none).
        labelled: coverage of the ``n_labelled`` frames.
    """

    iteration: int
    n_labelled: int
    n_explored: int
    n_broken: int
    explored: float | None
    explored_all: float | None
    labelled: float


def resolve_cvs(
    declared: Sequence[cvlib.CollectiveVariable], frames: Sequence[Atoms], auto: bool = True
) -> list[cvlib.CollectiveVariable]:
    """The declared CVs, or (with ``auto``) a peptide's phi and psi found in ``frames[0]``,
    else its backbone torsions (:func:`uq_bias.campaign.cvs.torsion_cvs`); [] if none."""
    if declared:
        return list(declared)
    if not (frames and auto):
        return []
    return cvlib.backbone_cvs(frames[0]) or cvlib.torsion_cvs(frames[0])


def campaign_cvs(config, frames: Sequence[Atoms]) -> list[cvlib.CollectiveVariable]:
    """The CVs of a campaign: ``report.cvs``, else phi and psi of a peptide backbone, else the
    molecule's backbone torsions, unless ``report.ramachandran`` is false."""
    return resolve_cvs(config.report.cvs, frames, auto=config.report.ramachandran is not False)


def explored_frames(state: CampaignState, k: int) -> list[Atoms]:
    """The frames the walkers of iteration ``k`` kept (walker by walker)."""
    folder = state.root / "iterations" / f"{k:03d}" / "walkers"
    if not folder.is_dir():
        return []
    return [a for path in sorted(folder.glob("w*.extxyz")) for a in read_frames(path)]


def intact(frames: Sequence[Atoms], reference: Atoms | None) -> np.ndarray:
    """(S,) whether each frame keeps the bond graph of ``reference`` (see the module
    docstring); all True without a reference, for a periodic one, or for frames of another
    size."""
    keep = np.ones(len(frames), dtype=bool)
    if reference is None or reference.pbc.any():
        return keep
    graph = BondGraph.of(reference)
    for s, atoms in enumerate(frames):
        if len(atoms) == len(reference):
            keep[s] = graph.intact([atoms])[0]
    return keep


def coverage_by_iteration(
    state: CampaignState,
    cvs: Sequence[cvlib.CollectiveVariable],
    iterations: Sequence[int],
    reference: Atoms | None = None,
) -> list[CoverageRow]:
    """One :class:`CoverageRow` per iteration in ``iterations`` (empty without CVs);
    ``reference``: the structure whose bond graph an intact frame keeps (None: all count)."""
    if not cvs or not iterations:
        return []
    labelled = state.labelled()
    tags = np.array([int(a.info.get("iteration", 0)) for a in labelled])
    labelled_values = cvlib.values(labelled, cvs)
    explored = {}
    for k in range(max(iterations)):
        frames = explored_frames(state, k)
        explored[k] = (cvlib.values(frames, cvs), intact(frames, reference))
    rows = []
    for k in iterations:
        before = [explored[j] for j in range(k)]
        seen = np.concatenate([v for v, _ in before]) if before else np.empty((0, len(cvs)))
        whole = np.concatenate([m for _, m in before]) if before else np.empty(0, dtype=bool)
        mine = labelled_values[tags < k]
        rows.append(
            CoverageRow(
                iteration=k,
                n_labelled=len(mine),
                n_explored=len(seen),
                n_broken=int((~whole).sum()),
                explored=cvlib.coverage_of(seen[whole], cvs) if whole.any() else None,
                explored_all=cvlib.coverage_of(seen, cvs) if len(seen) else None,
                labelled=cvlib.coverage_of(mine, cvs),
            )
        )
    return rows


def cv_values(state: CampaignState, cvs: Sequence[cvlib.CollectiveVariable], last: int):
    """(explored (S, d), labelled (L, d), labelled iteration tags (L,)) for the CV map: walker
    frames of iterations < ``last`` + 1 and every labelled frame."""
    labelled = state.labelled()
    frames = [a for k in range(last + 1) for a in explored_frames(state, k)]
    tags = np.array([int(a.info.get("iteration", 0)) for a in labelled])
    return cvlib.values(frames, cvs), cvlib.values(labelled, cvs), tags
