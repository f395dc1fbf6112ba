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
        "manifest",
        help="list a folder of recordings as a JSONL manifest (durations, sidecar transcripts)",
        description="Write OUT, one JSON line per audio file under FOLDER (recursive): path "
        "(relative to OUT's folder when under it), id, duration and sample rate from the file's "
        "header, and text from a sidecar transcript of the same stem (NAME.txt, else NAME.lab). "
        "Unreadable files are left out, each with a warning.",
        epilog="example: l3se data manifest my/clean my/clean.jsonl --speaker-from-folder",
    )
    p.add_argument("folder", type=Path, metavar="FOLDER", help="folder of recordings")
    p.add_argument("out", type=Path, metavar="OUT", help="the manifest to write (.jsonl)")
    p.add_argument("--speaker-from-folder", action="store_true",
                   help="each file's speaker is the first folder below FOLDER on its path")
    p.set_defaults(func=_manifest)

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

    p = cmds.add_parser(
        "index",
        help="index tar shards in place (Emilia's release, l3se's own) for training",
        description="Write the index folder OUT (data_sim.index) of every utterance in the tar "
        "shards SHARD (globs allowed; quote them): Emilia's WebDataset shards ({id}.mp3 + "
        "{id}.json) or l3se's own. Reads tar headers, the .json members and each audio "
        "member's first bytes, not the audio. Resumable: OUT/parts keeps one index per "
        "finished shard. Unusable members are left out and listed in OUT/skipped.jsonl. Point "
        "a config's speech/noise/rir at OUT.",
        epilog="example: l3se data index '/data/Emilia/EN/*.tar' '/data/Emilia/ZH/*.tar' "
        "/data/emilia/index -j 8",
    )
    p.add_argument("shards", nargs="+", metavar="SHARD", help="tar shards or globs of them")
    p.add_argument("out", type=Path, metavar="OUT", help="the index folder to write")
    p.add_argument("-j", "--jobs", type=int, default=1, help="shards read in parallel (default 1)")
    p.set_defaults(func=_index)

    p = cmds.add_parser(
        "shard",
        help="re-pack sources as l3se's tar shards (FLAC + JSON) with their index",
        description="Write OUT/shards.000000.tar ... holding {id}.flac (16-bit, at the source's "
        "sample rate) + {id}.json, and their index in OUT. Sources: folders, LibriSpeech trees, "
        "JSONL manifests, wav.scp files, index folders, tar shards (globs allowed) and Emilia's "
        "older .tar.gz + JSONL batches (un-gzipped once under OUT/staging). Which utterance "
        "goes to which shard depends only on the sources, --shuffle and --seed, so a re-run "
        "writes only the shards it lacks. Unreadable files are left out and listed in "
        "OUT/skipped.jsonl.",
        epilog="example: l3se data shard /data/Emilia/EN/EN_B000*.tar.gz /data/emilia-en "
        "--shard-size 2000 --shuffle -j 8",
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="sources (see above)")
    p.add_argument("out", type=Path, metavar="OUT", help="the folder to write shards into")
    p.add_argument("--shard-size", type=int, default=1000,
                   help="utterances per shard (default 1000)")
    p.add_argument("--shuffle", action="store_true", help="shuffle utterances across shards")
    p.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    p.add_argument("--rirs", action="store_true",
                   help="folders are RIR folders: leave out OpenSLR's *noise* recordings")
    p.add_argument("-j", "--jobs", type=int, default=1, help="shards written in parallel "
                   "(default 1)")
    p.set_defaults(func=_shard)


def _starter(args) -> int:
    from data_sim.starter import StarterConfig, build_starter_corpus
    from l3se.config import load_config

    summary = build_starter_corpus(args.out, load_config(StarterConfig, args.config, args.overrides))
    print(json.dumps(summary, indent=2))
    return 0


def _evalset(args) -> int:
    from data_sim.evalset import EvalSetConfig, build_evalset_from_config
    from data_sim.sources import SourceError
    from l3se.config import load_config
    from l3se.console import user_errors
    from recipes.stages import resolve_config

    cfg = load_config(EvalSetConfig, resolve_config("evalset", args.config), args.overrides)
    with user_errors(SourceError, ValueError):
        rows = build_evalset_from_config(args.out, cfg)
    subsets = sorted({r["subset"] for r in rows})
    print(f"wrote {len(rows)} mixtures ({', '.join(subsets)}) and {args.out / 'evalset.jsonl'}")
    return 0


def _word_times(args) -> int:
    from data_sim.sources import SourceError
    from data_sim.word_times import add_word_times
    from l3se.console import user_errors

    with user_errors(SourceError):
        n = add_word_times(args.inp, args.out)
    print(f"wrote {n} utterances with word timings to {args.out}")
    return 0


def _summary(args) -> int:
    from data_sim.dataset import DataConfig, build_dataset
    from data_sim.sources import SourceError
    from data_sim.summary import format_summary, summarize
    from l3se.config import load_config
    from l3se.console import user_errors
    from recipes.stages import resolve_config

    cfg = load_config(DataConfig, resolve_config("data", args.config), args.overrides)
    with user_errors(SourceError, ValueError):
        dataset = build_dataset(cfg)
    s = summarize(dataset, n=args.num, workers=args.workers)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0


def _index(args) -> int:
    from data_sim.shards import index_shards
    from data_sim.sources import SourceError
    from l3se.console import user_errors

    with user_errors(SourceError):
        summary = index_shards(args.shards, args.out, jobs=args.jobs)
    print(summary.line("indexed"))
    return 0


def _shard(args) -> int:
    from data_sim.shards import write_shards
    from data_sim.sources import SourceError
    from l3se.console import user_errors

    with user_errors(SourceError):
        summary = write_shards(args.sources, args.out, shard_size=args.shard_size,
                               shuffle=args.shuffle, seed=args.seed, jobs=args.jobs,
                               rirs=args.rirs)
    print(summary.line("wrote"))
    return 0


def _manifest(args) -> int:
    from data_sim.manifest import write_manifest
    from data_sim.sources import SourceError
    from l3se.console import user_errors

    with user_errors(SourceError):
        manifest = write_manifest(args.folder, args.out, args.speaker_from_folder)
    print(f"wrote {args.out}: {manifest.summary()}")
    return 0
