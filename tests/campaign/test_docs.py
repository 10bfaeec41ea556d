"""The user guide: every API name it mentions imports, and every page is in the mkdocs nav."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]


def test_every_api_name_in_the_guide_imports():
    text = (ROOT / "docs" / "api.md").read_text()
    names = sorted(set(re.findall(r"`(uq_bias(?:\.\w+)+)`", text)))
    assert len(names) > 30
    missing = []
    for name in names:
        module_name, _, attr = name.rpartition(".")
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        try:
            if not hasattr(importlib.import_module(module_name), attr):
                missing.append(name)
        except ImportError:
            missing.append(name)
    assert missing == []


def test_nav_lists_every_page():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = {page for entry in nav for page in entry.values()}
    assert pages == {p.name for p in (ROOT / "docs").glob("*.md")}


@pytest.mark.slow
def test_mkdocs_builds_strictly(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "config" / "index.html").is_file()
