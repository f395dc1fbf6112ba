"""``l3se train STAGE``: run one stage of the training recipe (``recipes/stages.py``).

``--config`` takes a name (``recipes/configs/<folder>/<name>.yaml``) or a YAML path, then
``key.sub=value`` overrides. Under ``torchrun`` every process runs the same command.
``--check [--world-size N[,N...]]`` checks the launch instead, without data, weights or network
(``recipes.stages.check_launch``).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from recipes.stages import add_stage_parsers

    p = sub.add_parser("train", help="train a stage of the L3-SE recipe")
    add_stage_parsers(p.add_subparsers(dest="stage", metavar="STAGE", required=True))
