"""``l3se recipe``: multi-step recipes. ``quickstart`` is what a newcomer runs first.

Until the training stages land, the quickstart builds the offline material (starter corpus and
eval set, each reused when already complete) and prints a summary of simulated mixtures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    recipe = sub.add_parser("recipe", help="multi-step recipes (quickstart)")
    cmds = recipe.add_subparsers(dest="recipe_command", metavar="RECIPE", required=True)
    p = cmds.add_parser(
        "quickstart",
        help="offline end-to-end run on the starter corpus",
        description="Build the starter corpus and eval set under --data (reused when complete) "
        "and summarise the simulated training mixtures.",
    )
    p.add_argument("--data", type=Path, default=Path("data"), help="data folder (default: data)")
    p.add_argument(
        "--starter", nargs="*", default=[], metavar="KEY=VALUE",
        help="StarterConfig overrides, e.g. speech_hours=0.2",
    )
    p.set_defaults(func=_quickstart)


def _quickstart(args) -> int:
    from data_sim.summary import format_summary
    from l3se.cli.data import build_eval, build_starter, summarize_config

    start = time.perf_counter()
    starter = args.data / "starter"
    if (starter / "starter.json").is_file() and not args.starter:
        print(f"[quickstart] starter corpus complete: {starter}")
    else:
        print(f"[quickstart] building the starter corpus in {starter}")
        build_starter(starter, None, args.starter)
    sources = [
        f"speech={starter}/speech/train.jsonl",
        f"noise={starter}/noise/train.jsonl",
        f"rir={starter}/rir/train.jsonl",
    ]
    evalset = args.data / "evalset"
    if (evalset / "evalset.jsonl").is_file():
        print(f"[quickstart] eval set complete: {evalset}")
    else:
        print(f"[quickstart] building the eval set in {evalset}")
        build_eval(evalset, "tiny", [s.replace("train.jsonl", "test.jsonl") for s in sources])
    print("[quickstart] simulated training mixtures (recipes/configs/data/tiny.yaml):")
    print(format_summary(summarize_config("tiny", sources, n=200, workers=2)))
    print(f"[quickstart] done in {time.perf_counter() - start:.0f} s")
    return 0
