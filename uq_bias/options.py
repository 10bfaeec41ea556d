"""Options declared once: a dataclass field that carries its own documentation and unit.

Every user-facing option of the library lives on the dataclass that uses it (``ExploreConfig``,
``WatchdogConfig``, ``BiasConfig``, ``FitOptions``, ...) and is declared with :func:`option`.
The campaign YAML, the ``uq-bias`` flags and the reference pages in ``docs/`` are generated from
these declarations, so a new field is reachable everywhere at once::

    @dataclass(frozen=True)
    class WatchdogConfig:
        max_force: float | None = option(50.0, "Stop when a force exceeds this.", unit="eV/A")
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

#: Keys of ``Field.metadata`` written by :func:`option`.
DOC = "doc"
UNIT = "unit"


def option(default: Any, doc: str, *, unit: str | None = None) -> Any:
    """A dataclass field with a default, a one-line ``doc`` and an optional ``unit`` (e.g.
    "eV/A", "fs", "K"). Mutable defaults (dicts, lists, dataclass instances) are deep-copied for
    every instance."""
    metadata = {DOC: doc, UNIT: unit}
    if isinstance(default, (dict, list, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
