"""YAML as users write it: PyYAML's safe loader, with floats read as YAML 1.2 reads them.

PyYAML implements YAML 1.1, whose floats need a dot: ``1e-3`` and ``2E5`` come back as text,
so ``lr: 1e-3`` was refused as "expected float, got str", and ``accuracy: 1e-3`` under
``oracle.kwargs`` reached the calculator as a string. :func:`load` reads them as floats, and
otherwise builds only plain data, as ``yaml.safe_load`` does (no Python objects).
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus the YAML 1.2 exponent floats without a dot."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """The plain data (mappings, lists, numbers, text) of a YAML document."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
