"""The command-line reference names every subcommand the parser has, and only those."""

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
