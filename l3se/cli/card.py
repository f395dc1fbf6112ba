"""``l3se card [MODEL]``: print a model directory's card, all of it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "card",
        help="print a model's card: training domain, steps, measured table, warnings",
        description="Print the model card (card.yaml) of a model directory: what it was trained "
        "on, its training steps, its warning and its measured evaluation table. `l3se enhance` "
        "prints one line of it.",
    )
    p.add_argument("model", type=Path, nargs="?", metavar="MODEL",
                   help="enhancer model directory (default: the bundled model)")
    p.add_argument("--width", type=int, default=100, metavar="N",
                   help="wrap the card's text at N characters (default: 100)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from l3se.card import BUNDLED_MODEL_DIR, card_text, read_card
    from l3se.cli import UserError

    if args.width < 40:  # the field labels alone take 13
        raise UserError("--width must be at least 40")
    model = BUNDLED_MODEL_DIR if args.model is None else args.model
    if not model.is_dir():
        raise UserError(f"{model}: no such model directory")
    card = read_card(model)  # a malformed card is a ConfigError: one line, exit status 2
    if card is None:
        raise UserError(f"{model} has no model card (card.yaml): its training data and quality "
                        "are unknown")
    print(f"model card of {model}\n")
    print(card_text(card, args.width))
    return 0
