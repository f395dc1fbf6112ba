"""What every l3se command does around its work: logging, quiet third-party warnings, and user
mistakes reported as one line (exit status 2) instead of a traceback.

It sits below ``l3se.cli`` so that the recipe scripts, launched without the ``l3se`` command
(``torchrun ... recipes/train_codec.py codec-1``), behave exactly like it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Third-party noise on every command: deprecations inside dac/audiotools/transformers/torch.
QUIET = (
    r".*torch\.nn\.utils\.weight_norm.*deprecated",
    r".*torch\.jit\.script.*deprecated",
    r"Support for mismatched key_padding_mask",
    r"stft_data changed shape",
)


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Re-raise the exceptions of ``kinds`` (what a library raises for bad input) as
    ``UserError``, so that they reach the user as one line."""
    try:
        yield
    except kinds as e:
        raise UserError(str(e)) from None


def quiet_warnings() -> None:
    import warnings

    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace,
                verbose: bool = False) -> int:
    """Run a parsed command's handler; returns the process exit status."""
    from l3se.config import ConfigError

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    quiet_warnings()
    try:
        return int(func(args) or 0)
    except (UserError, ConfigError) as e:
        print(f"l3se: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("l3se: interrupted", file=sys.stderr)
        return 130
