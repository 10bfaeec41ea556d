"""The README's Python example runs as written (with fewer MD steps) on a tiny model file."""

from __future__ import annotations

import re
from pathlib import Path

import ase.io
import torch
from reference_data import rattled_cu_frames

from uq_bias.training.build import build_mace

README = Path(__file__).parents[1] / "README.md"


def test_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(build_mace([13, 29], cutoff=4.0), "my.model")
    ase.io.write("train.xyz", rattled_cu_frames(6, seed=1, size=(2, 1, 1)))
    ase.io.write("valid.xyz", rattled_cu_frames(4, seed=2, size=(2, 1, 1)))
    text = README.read_text()
    code = re.search(r"## Python in a few lines.*?```python\n(.*?)```", text, re.S).group(1)
    assert "steps=2000" in code
    namespace: dict = {}
    exec(code.replace("steps=2000", "steps=30"), namespace)
    frames, batch = namespace["result"].frames, namespace["batch"]
    assert len(batch) == min(8, len(frames)) and len(set(batch)) == len(batch)
    assert all(0 <= i < len(frames) for i in batch)  # indices into result.frames
    assert all("forces_uncertainty" in frame.arrays for frame in frames)
