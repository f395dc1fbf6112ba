"""The ``l3se`` command. Each subcommand group lives in its own module with a
``register(subparsers)`` function; heavy imports happen inside the handlers so that
``l3se --help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import sys

from l3se import __version__
from l3se.console import UserError, quiet_warnings, run_command

__all__ = ["GROUPS", "UserError", "build_parser", "main", "quiet_warnings"]

# Modules under l3se.cli, one per subcommand group, in the order `l3se --help` lists them.
GROUPS = ["data", "recipe", "train", "enhance", "card", "evaluate", "diagnose"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l3se",
        description="L3-SE speech enhancement: simulate data, train the staged recipes, "
        "enhance and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"l3se {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(f"l3se.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return run_command(args.func, args, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
