"""``l3se data``: build the offline starter corpus and eval sets, inspect simulated mixtures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="starter corpus, eval sets, mixture summaries")
    cmds = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = cmds.add_parser(
        "starter",
        help="synthesise the offline starter corpus (TTS speech, noises, RIRs)",
        description="Build speech from Debian's TTS voices, procedural noises and simulated RIRs "
        "under OUT. Resumable: finished files are kept. Overrides set StarterConfig fields, "
        "e.g. speech_hours=0.5 n_rirs=100.",
    )
    p.add_argument("out", type=Path, help="output folder, e.g. data/starter")
    p.add_argument("--config", help="YAML file with StarterConfig fields")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=_starter)

    p = cmds.add_parser(
        "evalset",
        help="write a fixed eval set (general- and low-SNR) with a JSONL manifest",
        description="Mix held-out clean speech with held-out noises/RIRs at fixed seeds "
        "following the paper's protocol.",
    )
    p.add_argument("out", type=Path, help="output folder, e.g. data/evalset")
    p.add_argument("--config", default="tiny", help="tiny | paper | PATH (default: tiny)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=_evalset)

    p = cmds.add_parser(
        "word-times",
        help="add estimated word timings to a speech manifest (for the TTR objective)",
        description="Write OUT, a copy of the JSONL manifest IN with a 'words' field "
        "([[word, start, end], ...] in seconds) on every utterance with a transcript. The "
        "timings are estimated from the audio's active-speech span, not forced-aligned: see "
        "data_sim.word_times.",
    )
    p.add_argument("inp", type=Path, metavar="IN", help="JSONL manifest with 'text' fields")
    p.add_argument("out", type=Path, metavar="OUT", help="the manifest to write")
    p.set_defaults(func=_word_times)

    p = cmds.add_parser(
        "summary",
        help="simulate mixtures from a data config and print their statistics",
    )
    p.add_argument("--config", default="tiny", help="tiny | paper | PATH (default: tiny)")
    p.add_argument("-n", "--num", type=int, default=200, help="mixtures to draw (default 200)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=_summary)


def _starter(args) -> int:
    from data_sim.starter import StarterConfig, build_starter_corpus
    from l3se.config import load_config

    summary = build_starter_corpus(args.out, load_config(StarterConfig, args.config, args.overrides))
    print(json.dumps(summary, indent=2))
    return 0


def _evalset(args) -> int:
    from data_sim.evalset import EvalSetConfig, build_evalset_from_config
    from data_sim.sources import SourceError
    from l3se.cli import UserError
    from l3se.config import load_config
    from recipes.stages import resolve_config

    cfg = load_config(EvalSetConfig, resolve_config("evalset", args.config), args.overrides)
    try:
        rows = build_evalset_from_config(args.out, cfg)
    except (SourceError, ValueError) as e:
        raise UserError(str(e)) from None
    subsets = sorted({r["subset"] for r in rows})
    print(f"wrote {len(rows)} mixtures ({', '.join(subsets)}) and {args.out / 'evalset.jsonl'}")
    return 0


def _word_times(args) -> int:
    from data_sim.sources import SourceError
    from data_sim.word_times import add_word_times
    from l3se.cli import UserError

    try:
        n = add_word_times(args.inp, args.out)
    except SourceError as e:
        raise UserError(str(e)) from None
    print(f"wrote {n} utterances with word timings to {args.out}")
    return 0


def _summary(args) -> int:
    from data_sim.dataset import DataConfig, build_dataset
    from data_sim.sources import SourceError
    from data_sim.summary import format_summary, summarize
    from l3se.cli import UserError
    from l3se.config import load_config
    from recipes.stages import resolve_config

    cfg = load_config(DataConfig, resolve_config("data", args.config), args.overrides)
    try:
        dataset = build_dataset(cfg)
    except (SourceError, ValueError) as e:
        raise UserError(str(e)) from None
    s = summarize(dataset, n=args.num, workers=args.workers)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0
