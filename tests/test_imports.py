"""Nothing heavy at import time: mace, nequip (and e3nn) load only when a model needs them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from uq_bias import load_model

BACKENDS = ("mace", "nequip", "e3nn")


@pytest.mark.parametrize("module", ["uq_bias", "uq_bias.cli"])
def test_import_loads_no_model_backend(module):
    """A fresh interpreter: importing the package leaves mace, nequip and e3nn unimported."""
    code = (
        f"import sys, {module}; "
        f"print(','.join(name for name in {BACKENDS!r} if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = done.stdout.strip()
    assert loaded == "", f"`import {module}` imported {loaded}"


@pytest.mark.skipif(importlib.util.find_spec("nequip") is not None, reason="nequip is installed")
def test_nequip_model_without_nequip_names_the_extra(tmp_path):
    path = tmp_path / "model.nequip.zip"
    path.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    with pytest.raises(ImportError, match=r"uq_bias\[nequip\]"):
        load_model(path)
