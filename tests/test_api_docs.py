"""The Python API guide's own-model example runs as written, and its contract checks bite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

API = Path(__file__).parents[1] / "docs" / "api.md"


def own_model_example() -> str:
    text = API.read_text()
    return re.search(r"### Your own model.*?```python\n(.*?)```", text, re.S).group(1)


def test_the_own_model_example_passes_the_contract_checks():
    """check_adapter compares features with autograd and forces, stress with finite
    differences: it fails on a module that breaks the contract (next test)."""
    exec(own_model_example(), {})


def test_the_same_module_with_detached_distances_fails_them():
    code = own_model_example().replace(".norm(dim=1)", ".detach().norm(dim=1)", 1)
    with pytest.raises(ValueError, match="does not depend on the graph's positions"):
        exec(code, {})
