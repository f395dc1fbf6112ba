"""The ``l3se`` command. Each subcommand group lives in its own module with a
``register(subparsers)`` function; heavy imports happen inside the handlers so that
``l3se --help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from l3se import __version__

# Modules under l3se.cli, one per subcommand group, in the order `l3se --help` lists them.
GROUPS = ["data", "recipe", "train", "enhance", "evaluate", "diagnose"]


# Third-party noise on every command: deprecations inside dac/audiotools/transformers/torch.
QUIET = (
    r".*torch\.nn\.utils\.weight_norm.*deprecated",
    r".*torch\.jit\.script.*deprecated",
    r"Support for mismatched key_padding_mask",
    r"stft_data changed shape",
)


def quiet_warnings() -> None:
    import warnings

    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


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
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    quiet_warnings()
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from l3se.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as e:
        print(f"l3se: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("l3se: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
