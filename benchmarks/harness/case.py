"""What a benchmark case declares: the campaigns it compares, its test set and its targets.

A case compares active-learning campaigns that differ **only in how they explore**: every
:class:`Variant` gives the ``exploration`` keys of its own (temperature, bias, watchdog) and a
folder name, and everything else (seed, start structures, initial frames, oracle, model,
training, calibration, selection, label budget) comes from the case's one ``base`` config, so
that a difference in the table can only come from exploration. The campaign of variant v and
seed s runs the config

    base  |  {"seed": s, "folder": v.folder, "exploration": base["exploration"] | v.exploration}

Each iteration's model is scored on the case's :class:`TestSet` (frames no campaign sees),
split into :class:`Subset` s; coverage of CV space is over the case's ``cvs`` (frames that keep
the bond graph of ``reference``; all frames without one). The verdict is the case's
``targets`` (:mod:`harness.targets`), declared as data.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ase import Atoms

from uq_bias.campaign.cvs import CollectiveVariable


@dataclass(frozen=True)
class Variant:
    """One campaign of a case.

    Attributes:
        name: its name in tables and figures, e.g. ``biased-300K``.
        short: its name inside ratios (``biased / plain 300 K``).
        folder: its campaign folder (put the settings that make it differ in the name, so a
            run with other settings never resumes another's folder).
        exploration: the ``exploration`` keys of its own, over the case's shared ones.
    """

    name: str
    short: str
    folder: str
    exploration: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Subset:
    """The test frames whose ``info["subset"]`` starts with ``prefix``, scored as ``name``."""

    name: str
    prefix: str

    def of(self, frames: Sequence[Atoms]) -> list[Atoms]:
        return [a for a in frames if str(a.info.get("subset", "")).startswith(self.prefix)]


@dataclass(frozen=True)
class TestSet:
    """A held-out test set, made once by ``make(spec, say)`` and cached by the content hash of
    ``spec`` (a dataclass) in ``<cache>/<name>_<hash>.extxyz`` (:mod:`harness.testsets`).

    Attributes:
        name: stem of the cache file.
        spec: what the set holds; any change to it makes a new file.
        make: builds the labelled frames (each with ``info["subset"]``).
        subsets: how the frames are scored; the first is the figure's.
        about: words after the first subset's frame count in the figure caption.
    """

    __test__ = False  # not a pytest class, whatever its name

    name: str
    spec: Any
    make: Callable
    subsets: tuple[Subset, ...]
    about: str = "held-out frames"


@dataclass(frozen=True, eq=False)
class Case:
    """A benchmark case (see the module docstring).

    Attributes:
        name: stem of the figure file (``<name>.png``).
        base: the campaign config all variants share, without ``seed`` and ``folder``.
        variants: the campaigns compared; the first is the one the targets are about.
        test_set: the held-out frames every iteration's model is scored on.
        targets: :class:`harness.targets.Ratio` / :class:`harness.targets.Lowest` entries.
        cvs: the collective variables of coverage (at least one).
        reference: the structure whose bond graph an intact frame keeps (None: all frames).
    """

    name: str
    base: dict
    variants: tuple[Variant, ...]
    test_set: TestSet
    targets: tuple = ()
    cvs: tuple[CollectiveVariable, ...] = ()
    reference: Atoms | None = None

    def __post_init__(self):
        names = [v.name for v in self.variants]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"case {self.name!r}: variant names must be given and differ: {names}")
        if "seed" in self.base or "folder" in self.base:
            raise ValueError(
                f"case {self.name!r}: 'seed' and 'folder' are set per campaign by the harness; "
                "remove them from base"
            )
        if not self.cvs:
            raise ValueError(f"case {self.name!r}: declare the CVs whose coverage is measured")
        for target in self.targets:
            unknown = [n for n in target.variants() if n not in names]
            if unknown:
                raise ValueError(
                    f"case {self.name!r}: target {target.label!r} names {unknown}, which are not "
                    f"variants; choose from {names}"
                )

    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"case {self.name!r} has no variant {name!r}; choose from {self.names()}")

    def config(self, variant: Variant, seed: int) -> dict:
        """The campaign config of ``variant`` and ``seed`` (the formula of the module
        docstring)."""
        config = copy.deepcopy(self.base)
        config["exploration"] = {**config.get("exploration", {}), **variant.exploration}
        return {"folder": variant.folder, "seed": seed, **config}
