"""The demo in a reduced form: it builds alanine dipeptide, labels it with GFN2-xTB, trains,
writes the report with the Ramachandran (CV) map, and prints the report path and its time."""

from __future__ import annotations

import re

import pytest

from uq_bias.campaign.demo import DEMO, demo, demo_config


def test_demo_config_is_valid_and_small(tmp_path):
    config = demo_config(tmp_path / "d")
    assert config.oracle.kind == "gfn2-xtb" and config.model.preset == "tiny"
    assert config.data.structures == "builtin:alanine_dipeptide"
    assert config.path(config.folder) == (tmp_path / "d").resolve()
    assert DEMO["stop"]["iterations"] >= 2  # "a few iterations"


@pytest.mark.slow
def test_reduced_demo_prints_report_and_time(tmp_path, capsys):
    result = demo(
        tmp_path / "demo",
        quiet=True,
        data={"initial_frames": 6},
        training={"max_epochs": 1},
        exploration={"steps": 10, "sample_every": 5},
        selection={"batch_size": 2},
        stop={"iterations": 1},
    )
    out = capsys.readouterr().out
    assert f"report: {result.report}" in out
    assert re.search(r"demo finished in \d+\.\d s on \d+ CPU thread", out)
    assert result.n_labelled == 6 + 2
    report = result.report.read_text()
    assert "cv_map.png" in report  # phi/psi of the labelled and explored frames
    assert (result.report.parent / "cv_map.png").stat().st_size > 0
