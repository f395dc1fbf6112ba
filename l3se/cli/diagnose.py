"""``l3se diagnose``: does a trained model listen to its input (``l3se.diagnostics``)?"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="check that a trained model follows its input (codec, NI-Encoder, LM, enhancer)",
        description="On the first N utterances of an eval set: the codec's resynthesis of clean "
        "speech (envelope correlation, STOI, codebook usage), the NI-Encoder's distance to the "
        "codec latent, the LM's teacher-forced loss with the true / another utterance's / an "
        "all-zero prefix, and the enhanced and direct-path outputs against the clean references.",
    )
    p.add_argument("model", type=Path, help="enhancer model directory (l3se train lm's model/)")
    p.add_argument("--ref", type=Path, required=True, help="eval set folder (l3se data evalset)")
    p.add_argument("-n", type=int, default=8, help="utterances to use (default 8)")
    p.add_argument("--json", type=Path, help="also write the report as JSON")
    p.set_defaults(func=_diagnose)


def _diagnose(args) -> int:
    from data_sim.files import atomic_write
    from l3se.cli import UserError
    from l3se.diagnostics import diagnose, format_report

    if args.n < 2:
        raise UserError("-n must be at least 2")
    try:
        report = diagnose(args.model, args.ref, args.n)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    print(format_report(report))
    if args.json:
        atomic_write(args.json, json.dumps(report, indent=1))
    return 0
