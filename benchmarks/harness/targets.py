"""Targets of a benchmark case, declared as data and judged PASS or MISS on the last rows.

``values[name]`` is the mean over seeds of a row key in the last row of variant ``name``
(:func:`harness.verdict.final`). Two kinds:

* :class:`Ratio`: PASS when values[of] / values[over] >= at_least (a ratio of 0 / 0, or with a
  missing value, is NaN and a MISS);
* :class:`Lowest`: PASS when variant ``of`` has the lowest value of all variants (an error).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(a: float, b: float) -> float:
    """a / b; NaN when either is NaN or b is 0."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


@dataclass(frozen=True)
class Ratio:
    """PASS when ``key`` of ``of`` over that of ``over`` is at least ``at_least``.

    Printed as ``- PASS: <of.short> / <over.short> <label> = <ratio> (target >= <at_least>)``.
    """

    key: str
    of: str
    over: str
    at_least: float
    label: str

    def variants(self) -> list[str]:
        return [self.of, self.over]

    def value(self, values: Mapping[str, float]) -> float:
        return ratio(values[self.of], values[self.over])

    def passed(self, values: Mapping[str, float]) -> bool:
        return self.value(values) >= self.at_least  # False for NaN

    def text(self, values: Mapping[str, float], short: Mapping[str, str]) -> str:
        return (
            f"{short[self.of]} / {short[self.over]} {self.label} = {self.value(values):.2f} "
            f"(target >= {self.at_least})"
        )

    def line(self, values: Mapping[str, float], short: Mapping[str, str]) -> str:
        return f"- {mark(self.passed(values))}: {self.text(values, short)}"


@dataclass(frozen=True)
class Lowest:
    """PASS when ``of`` has the lowest ``key`` of all variants (NaN values never win).

    Printed as ``- PASS: <label> <name value, ...> <unit> (lowest: <name>)``.
    """

    key: str
    of: str
    label: str
    unit: str = ""
    #: the values are printed times this (e.g. 1000 for eV/A^3 printed in meV/A^3)
    scale: float = 1.0

    def variants(self) -> list[str]:
        return [self.of]

    def best(self, values: Mapping[str, float]) -> str:
        finite = {n: v for n, v in values.items() if not math.isnan(v)}
        return min(finite, key=finite.get) if finite else "none"

    def passed(self, values: Mapping[str, float]) -> bool:
        return self.best(values) == self.of

    def text(self, values: Mapping[str, float]) -> str:
        listed = ", ".join(f"{n} {self.scale * v:.3f}" for n, v in values.items())
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.label} {listed}{unit} (lowest: {self.best(values)})"

    def line(self, values: Mapping[str, float], short: Mapping[str, str] | None = None) -> str:
        return f"- {mark(self.passed(values))}: {self.text(values)}"
