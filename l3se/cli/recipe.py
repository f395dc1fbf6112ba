"""``l3se recipe``: multi-step recipes. ``quickstart`` is what a newcomer runs first
(``recipes/quickstart.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    recipe = sub.add_parser("recipe", help="multi-step recipes (quickstart)")
    cmds = recipe.add_subparsers(dest="recipe_command", metavar="RECIPE", required=True)
    p = cmds.add_parser(
        "quickstart",
        help="offline end-to-end run: starter corpus, five tiny stages, enhance, evaluate",
        description="Build the starter corpus and eval set under --data, train codec-1, codec-2, "
        "s2t, distill and lm at tiny scale on the CPU under --runs, enhance the eval set and "
        "print the evaluation table (noisy vs enhanced vs the direct path without the LM vs "
        "codec resynthesis vs reference denoisers vs clean), and write the model card. Finished "
        "stages are reused and an interrupted stage resumes, so running it again continues.",
    )
    p.add_argument("--data", type=Path, default=Path("data"), help="data folder (default: data)")
    p.add_argument(
        "--runs", type=Path, default=Path("runs/quickstart"),
        help="where the stages write their runs (default: runs/quickstart)",
    )
    p.add_argument(
        "--scale", choices=["tiny", "small"], default="tiny",
        help="model and step scale: tiny (under an hour on 2 cores, the default) or small (the "
        "bundled default's: hours; run it in the background, it resumes)",
    )
    p.add_argument(
        "--steps", type=float, default=1.0, metavar="SCALE",
        help="multiply every stage's step count (default 1; 0.01 is a smoke run)",
    )
    p.add_argument(
        "--starter", nargs="*", default=[], metavar="KEY=VALUE",
        help="StarterConfig overrides, e.g. speech_hours=0.2",
    )
    p.add_argument(
        "--evalset", nargs="*", default=[], metavar="KEY=VALUE",
        help="EvalSetConfig overrides, e.g. n_utterances=20",
    )
    p.add_argument(
        "--metrics",
        help="metrics for the table (default: the offline ones but pocketsphinx's "
        "open-vocabulary WER/dWER; 'offline' adds them)",
    )
    p.add_argument("--workers", type=int, default=2, help="evaluation workers (default 2)")
    p.add_argument(
        "--baselines", nargs="*", default=["dfn3", "rnnoise"], metavar="NAME",
        help="reference denoisers in the table (default: dfn3 rnnoise; none: --baselines)",
    )
    p.add_argument(
        "--promote", action="store_true",
        help="make the trained model the bundled default when its STOI, WER and speaker "
        "similarity are no worse than the noisy input's and the current default's in every "
        "subset",
    )
    p.set_defaults(func=_quickstart)

    p = cmds.add_parser(
        "codec3-ablation",
        help="tiny codec-3 variants from a finished quickstart, scored side by side",
        description="Fine-tune the quickstart's codec-2 with each codec-3 config in --variants "
        "(same steps and seed), score each codec's resynthesis of the clean eval references "
        "(mel distance, STOI, DNSMOS, closed-vocabulary WER) and, with --lm-steps, train a tiny "
        "LM on each codec's tokens and score its enhanced output beside the noisy input. "
        "Finished runs are reused.",
    )
    p.add_argument("--variants", required=True, type=lambda s: s.split(","),
                   help="codec-3 config names, e.g. tiny,tiny_asr,tiny_ttr")
    p.add_argument("--runs", type=Path, default=Path("runs/quickstart"),
                   help="the finished quickstart to start from (default: runs/quickstart)")
    p.add_argument("--out", type=Path, default=Path("runs/codec3-ablation"),
                   help="where runs, outputs and table.md go (default: runs/codec3-ablation)")
    p.add_argument("--data", type=Path, default=Path("data"), help="data folder (default: data)")
    p.add_argument("--steps", type=int, default=300, help="codec-3 steps per variant (300)")
    p.add_argument("--ttr-steps", type=int, default=600,
                   help="steps of the ttr summariser, when a variant needs it (600)")
    p.add_argument("--judge-steps", type=int, default=2400,
                   help="steps of the CTC WavS2T judge, when a variant needs it (2400)")
    p.add_argument("--lm-steps", type=int, default=0,
                   help="steps of a tiny LM per codec (default 0: no LM columns)")
    p.add_argument("--files", type=int, default=40, help="eval utterances scored (default 40)")
    p.add_argument("--workers", type=int, default=2, help="evaluation workers (default 2)")
    p.add_argument("--metrics", default="stoi,dnsmos,wer_cv",
                   help="metrics of the table beside the mel distance (default stoi,dnsmos,wer_cv)")
    p.set_defaults(func=_ablation)

    p = cmds.add_parser(
        "codec-sweep",
        help="codec-1 designs on one CPU budget, scored on clean resynthesis (table + plot)",
        description="Train each codec-1 design (recipes/codec_sweep.py: tiny plus one change, "
        "then combinations) for --steps steps on one thread, resynthesise the clean references "
        "of the first --files eval utterances and score STOI, PESQ, closed-vocabulary WER, mel "
        "distance and the sound shared by all outputs; writes table.md, results.json and "
        "plot.png (quality against CPU minutes) under --out. Finished runs with the same "
        "settings are reused. Needs the starter corpus and eval set (`l3se recipe quickstart` "
        "builds both first).",
    )
    p.add_argument("--designs", type=lambda s: s.split(","),
                   help="comma-separated design names (default: all)")
    p.add_argument("--data", type=Path, default=Path("data"), help="data folder (default: data)")
    p.add_argument("--out", type=Path, default=Path("runs/codec-sweep"),
                   help="runs, table and plot (default: runs/codec-sweep)")
    p.add_argument("--steps", type=int, default=1500, help="codec-1 steps per design (1500)")
    p.add_argument("--files", type=int, default=40, help="eval utterances scored (default 40)")
    p.add_argument("--workers", type=int, default=1, help="evaluation workers (default 1)")
    p.add_argument("--metrics", default="stoi,pesq,wer_cv",
                   help="metrics beside the mel distance and shared sound (default "
                   "stoi,pesq,wer_cv)")
    p.add_argument("--baselines", nargs="*", default=["dfn3"], metavar="NAME",
                   help="reference denoisers scored beside the noisy input (default: dfn3; "
                   "none: --baselines)")
    p.set_defaults(func=_sweep)


def _quickstart(args) -> int:
    from data_sim.sources import SourceError
    from l3se.cli import UserError
    from recipes.quickstart import QuickstartConfig, run

    if args.steps <= 0:
        raise UserError("--steps must be positive")
    cfg = QuickstartConfig(
        data=args.data, runs=args.runs, scale=args.scale, steps_scale=args.steps, starter=args.starter,
        evalset=args.evalset, workers=args.workers, promote=args.promote,
        baselines=args.baselines,
    )
    if args.metrics:
        cfg.metrics = args.metrics
    try:
        run(cfg)
    except SourceError as e:
        raise UserError(str(e)) from None
    return 0


def _ablation(args) -> int:
    from data_sim.sources import SourceError
    from l3se.cli import UserError
    from recipes.codec3_ablation import AblationConfig, run

    for name in ("codec-2", "s2t", "distill"):
        if not (args.runs / name / "model").is_dir():
            raise UserError(f"{args.runs / name / 'model'} is missing: run `l3se recipe "
                            f"quickstart --runs {args.runs}` first")
    cfg = AblationConfig(variants=args.variants, runs=args.runs, out=args.out, data=args.data,
                         steps=args.steps, ttr_steps=args.ttr_steps,
                         judge_steps=args.judge_steps, lm_steps=args.lm_steps,
                         files=args.files, workers=args.workers, metrics=args.metrics)
    try:
        run(cfg)
    except SourceError as e:
        raise UserError(str(e)) from None
    return 0


def _sweep(args) -> int:
    from l3se.cli import UserError
    from recipes.codec_sweep import DESIGNS, SweepConfig, run

    for path in (args.data / "starter" / "speech" / "train.jsonl",
                 args.data / "evalset" / "evalset.jsonl"):
        if not path.is_file():
            raise UserError(f"{path} is missing: build the starter corpus and eval set first "
                            "(`l3se recipe quickstart` does, or `l3se data starter` and "
                            "`l3se data evalset`)")
    if args.steps <= 0 or args.files <= 0:
        raise UserError("--steps and --files must be positive")
    cfg = SweepConfig(data=args.data, out=args.out, steps=args.steps, files=args.files,
                      workers=args.workers, metrics=args.metrics, baselines=args.baselines)
    if args.designs:
        unknown = sorted(set(args.designs) - set(DESIGNS))
        if unknown:
            raise UserError(f"unknown design(s) {', '.join(unknown)}; choose from "
                            f"{', '.join(DESIGNS)}")
        cfg.designs = args.designs
    run(cfg)
    return 0
