"""Ctrl-C (SIGINT) and SIGTERM in the middle of a campaign: one line saying where it stopped and
how to resume, exit status 130 / 143, no half-written file, and a rerun that resumes to the same
labelled frames as a campaign never interrupted (issue 25).

One campaign (EMT, 6 initial frames labelled slowly, ``stop.iterations: 0``, so the labelled
frames are exactly the initial frames, known from the seed before any label): SIGINT while the
oracle labels, SIGTERM while the first model trains (inside Lightning, which catches the
interrupt itself), then a resume in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from uq_bias.campaign import load, run
from uq_bias.campaign.state import CampaignState
from uq_bias.campaign.validate import first_frames

from .test_loop import FLAKY, check_exactly_once, check_labels_against, cu8, write_campaign


def _default_sigint() -> None:
    """In the child before it starts: Ctrl-C back to its default. A test run started in the
    background (``cmd &`` in a script, nohup) ignores SIGINT, children inherit that, and Python
    keeps an ignored SIGINT ignored: the campaign would never see the signal the test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(path: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "uq_bias.cli", "run", str(path), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_default_sigint,
    )


def _interrupt(path: Path, signum: int, ready, timeout: float = 120.0) -> tuple[int, str]:
    """Start the campaign, send ``signum`` once ``ready()`` holds; (exit status, output)."""
    process = _start(path)
    end = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > end:
            process.kill()
            raise AssertionError(f"the campaign ended before the signal: {process.stdout.read()}")
        time.sleep(0.05)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def _no_temporary_files(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def test_sigint_and_sigterm_stop_cleanly_and_the_rerun_resumes(tmp_path):
    from ase.calculators.emt import EMT

    path = write_campaign(
        tmp_path,
        cu8(),
        data={"initial_frames": 6, "rattle": 0.1},
        oracle={"kind": "import", "calculator": f"{FLAKY}:FlakyEMT", "kwargs": {"delay": 0.5}},
        executor={"kind": "inprocess"},
        training={"max_epochs": 200},
        stop={"iterations": 0},
    )
    folder = tmp_path / "campaign"
    labels = folder / "iterations" / "000" / "labels"
    resume = f"resume with: uq-bias run {path}"

    # 1. Ctrl-C while the oracle labels the initial frames
    status, output = _interrupt(path, signal.SIGINT, lambda: len(list(labels.glob("*"))) >= 2)
    assert status == 130, output
    assert "interrupted by SIGINT (Ctrl-C) in iteration 0, stage label" in output
    assert resume in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
    _no_temporary_files(folder)
    state = CampaignState(folder)
    assert not state.done(0, "label")

    # 2. SIGTERM while the first model trains (Lightning catches the interrupt itself)
    metrics = folder / "iterations" / "001" / "model" / "member_0_metrics.csv"
    status, output = _interrupt(path, signal.SIGTERM, metrics.is_file)
    assert status == 143, output
    assert "interrupted by SIGTERM in iteration 1, stage train" in output
    assert resume in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
    _no_temporary_files(folder)
    assert state.done(0, "merge") and not state.done(1, "train")
    assert "interrupted by SIGTERM" in state.log_path.read_text()

    # 3. the rerun (training keys may change on resume) labels exactly the frames an
    # uninterrupted campaign labels
    path.write_text(path.read_text().replace("max_epochs: 200", "max_epochs: 2"))
    assert "max_epochs: 2\n" in path.read_text()
    config = load(path)
    result = run(path, progress=None)
    assert result.reason == "0 iterations done"
    ids = check_exactly_once(state)
    expected = [a.info["frame_id"] for a in first_frames(config, [cu8()])]
    assert sorted(ids) == sorted(expected)
    check_labels_against(state.labelled(), EMT)
    log = state.log_path.read_text()
    assert log.count("iteration 0: label done") == 1 and log.count("iteration 1: train done") == 1
