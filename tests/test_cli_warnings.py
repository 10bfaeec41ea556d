"""`uq-bias` commands keep third-party noise (TorchScript, e3nn, Lightning deprecations, mace's
import notice) off the terminal; a plain import of the same libraries shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
from reference_data import rattled_cu_frames

ROOT = Path(__file__).parents[1]
NOISE = ("TorchScript", "torch.load", "LeafSpec", "cuequivariance", "Warning")


def _run(args, cwd) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_train_command_output_has_no_third_party_warnings(tmp_path):
    ase.io.write(tmp_path / "train.xyz", rattled_cu_frames(4, seed=1, size=(2, 1, 1)))
    ase.io.write(tmp_path / "valid.xyz", rattled_cu_frames(2, seed=2, size=(2, 1, 1)))
    args = ["-m", "uq_bias.cli", "train", "--train", "train.xyz", "--valid", "valid.xyz"]
    args += ["--out", "m.model", "--preset", "tiny", "--cutoff", "3.5", "--max-epochs", "1"]
    out = _run([*args, "--no-progress-bar"], tmp_path)
    assert (tmp_path / "m.model").is_file()
    assert not [word for word in NOISE if word in out], out[-3000:]
    # the same libraries imported and used outside the CLI do make noise (the check can fail)
    bare = _run(["-c", "import mace.tools.cg, e3nn.o3"], tmp_path)
    assert any(word in bare for word in NOISE)
