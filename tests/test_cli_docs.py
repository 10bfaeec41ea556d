"""The command-line reference is generated from the parser: it names every subcommand and flag."""

from __future__ import annotations

import re
from pathlib import Path

from uq_bias.cli import build_parser

ROOT = Path(__file__).parents[1]


def test_every_subcommand_is_documented():
    parser = build_parser()
    subcommands = set(parser._subparsers._group_actions[0].choices)
    documented = set(re.findall(r"^\| `uq-bias (\w+)", (ROOT / "docs/cli.md").read_text(), re.M))
    assert documented == subcommands


def test_cli_reference_is_up_to_date():
    from uq_bias.docs import cli_markdown

    assert (ROOT / "docs/cli.md").read_text() == cli_markdown(), (
        "docs/cli.md is stale: run `python -m uq_bias.docs`"
    )
