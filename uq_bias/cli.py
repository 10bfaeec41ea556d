"""`uq-bias` command line: a thin skin over the Python API.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets
``func`` to a small function calling the Python API. Every feature here is reachable from Python.
"""

from __future__ import annotations

import argparse
import sys


def _add_train(sub) -> None:
    """`uq-bias train`: see uq_bias.training."""


COMMANDS = [_add_train]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uq-bias",
        description="Calibrated uncertainty, uncertainty-biased MD and active learning for MLIPs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
        print(f"uq-bias {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
