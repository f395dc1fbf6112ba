"""``l3se recipe``: multi-step recipes. ``quickstart`` is what a newcomer runs first
(``recipes/quickstart.py``); ``finetune`` adapts a model to one's own recordings
(``recipes/finetune.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    recipe = sub.add_parser("recipe", help="multi-step recipes (quickstart, finetune)")
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
    p.add_argument(
        "--hold-out", metavar="ENGINE",
        help="train without the starter corpus's voices of this TTS engine (espeak-ng, flite, "
        "festival) and give the table for them and for the other voices apart: how the model "
        "does on voices it never heard",
    )
    p.set_defaults(func=_quickstart)

    p = cmds.add_parser(
        "finetune",
        help="fine-tune the default model on your own clean speech and noise folders",
        description="List --speech and --noise as manifests (sidecar .txt/.lab transcripts "
        "kept) with a few held-out validation files, train the chosen stages starting from "
        "--base's weights (distill: its NI-Encoder towards its own output on the clean speech; "
        "lm: its language model) on mixtures of the two, and write OUT/model, an enhancer model "
        "for `l3se enhance --model`. Finished stages are reused and an interrupted one "
        "resumes, so running it again continues (delete OUT/<stage> to retrain one).",
        epilog="example: l3se recipe finetune --speech my/clean --noise my/noise --out "
        "runs/finetune --steps 500; then l3se enhance noisy.wav out.wav --model "
        "runs/finetune/model",
    )
    p.add_argument("--speech", type=Path, required=True, help="folder of clean recordings")
    p.add_argument("--noise", type=Path, required=True, help="folder of noise recordings")
    p.add_argument("--out", type=Path, required=True,
                   help="where manifests, runs and the model go (OUT/model)")
    p.add_argument("--rir", type=Path,
                   help="folder of room impulse responses to add reverberation (default: none)")
    p.add_argument("--base", type=Path,
                   help="enhancer model directory to start from (default: the bundled model)")
    p.add_argument("--stages", default="distill,lm", type=lambda s: s.split(","),
                   help="stages to fine-tune, of distill,lm (default: both)")
    p.add_argument("--steps", type=int,
                   help="optimizer steps per stage (default: distill 300, lm 2000; about 15 "
                   "minutes in all on 2 CPU cores with the bundled model)")
    p.add_argument("--config", default="tiny",
                   help="the stages' config scale: tiny, small, paper (batch, crop length, "
                   "mixing; default tiny, the bundled model's)")
    p.add_argument("--speaker-from-folder", action="store_true",
                   help="a recording's speaker is the first folder below --speech on its path")
    p.set_defaults(func=_finetune)

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

    p = cmds.add_parser(
        "codec-eval",
        help="codecs' resynthesis of clean eval speech scored side by side, with the "
        "perplexity of a token LM on each codec's tokens",
        description="Resynthesise the clean references of an eval set (its first subset) "
        "through each --codec, score them with l3se evaluate's metrics beside the references "
        "themselves (the floor), train an unconditional token LM on each codec's tokens of the "
        "config's training speech (same utterances, crops, seed and steps for every codec) and "
        "report its held-out perplexity on the references' tokens, overall and per codebook. "
        "Writes table.md and results.json under --out; a rerun reuses resyntheses, scores and "
        "perplexities made with the same codec weights and settings.",
        epilog="example: l3se recipe codec-eval --config paper --ref data/evalset-paper "
        "--download --codec codec2=runs/codec2-paper/model --codec asr=runs/codec3-paper-asr/model",
    )
    p.add_argument("--codec", action="append", default=[], required=True, metavar="NAME=DIR",
                   help="a codec model folder (a saved WavCodec) and its row's name; repeatable")
    p.add_argument("--ref", type=Path, default=Path("data/evalset"),
                   help="eval set folder from `l3se data evalset`, or its evalset.jsonl "
                   "(default: data/evalset)")
    p.add_argument("--config", default="tiny",
                   help="recipes/configs/codec_eval config: tiny (offline metrics, a CPU token "
                   "LM on the starter corpus; the default) or paper, or a YAML path")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="config overrides, e.g. token_lm.steps=50 or token_lm=null (no LM)")
    p.add_argument("--lm-steps", type=int, help="token-LM steps (default: the config's)")
    p.add_argument("--metrics", help="l3se evaluate metrics (default: the config's)")
    p.add_argument("--model", action="append", default=[], metavar="KEY=NAME_OR_PATH",
                   help="model of a model-based metric, as l3se evaluate's --model; repeatable")
    p.add_argument("--download", action="store_true",
                   help="allow metric model downloads from the hub (default: local only)")
    p.add_argument("--files", type=int, help="score only the first N utterances (default: all)")
    p.add_argument("--out", type=Path, default=Path("runs/codec-eval"),
                   help="resyntheses, reports, table.md and results.json (default: "
                   "runs/codec-eval)")
    p.add_argument("--workers", type=int,
                   help="evaluation workers (default: one per available core)")
    p.add_argument("--device", default="auto",
                   help="resynthesis and token LM: auto | cpu | cuda | cuda:N (default: auto)")
    p.set_defaults(func=_codec_eval)


def _quickstart(args) -> int:
    from data_sim.sources import SourceError
    from l3se.cli import UserError
    from recipes.quickstart import QuickstartConfig, run

    if args.steps <= 0:
        raise UserError("--steps must be positive")
    if args.hold_out and args.promote:
        raise UserError("--hold-out trains a model for measuring, not for use: it cannot be "
                        "promoted (drop --promote)")
    cfg = QuickstartConfig(
        data=args.data, runs=args.runs, scale=args.scale, steps_scale=args.steps, starter=args.starter,
        evalset=args.evalset, workers=args.workers, promote=args.promote,
        baselines=args.baselines, hold_out=args.hold_out,
    )
    if args.metrics:
        cfg.metrics = args.metrics
    try:
        run(cfg)
    except SourceError as e:
        raise UserError(str(e)) from None
    return 0


def _finetune(args) -> int:
    from data_sim.sources import SourceError
    from l3se.cli import UserError
    from l3se.enhancer import DEFAULT_MODEL_DIR, check_model_dir
    from l3se.training.checkpoint import CheckpointError
    from recipes.finetune import FINETUNE_STAGES, FinetuneConfig, run

    unknown = sorted(set(args.stages) - set(FINETUNE_STAGES))
    if unknown or not args.stages:
        raise UserError(f"--stages: choose from {','.join(FINETUNE_STAGES)}, got "
                        f"{','.join(args.stages)}")
    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be at least 1")
    base = args.base or DEFAULT_MODEL_DIR
    try:
        check_model_dir(base)
    except FileNotFoundError as e:
        raise UserError(f"--base: {e}") from None
    cfg = FinetuneConfig(speech=args.speech, noise=args.noise, out=args.out, rir=args.rir,
                         base=base, stages=args.stages, steps=args.steps, config=args.config,
                         speaker_from_folder=args.speaker_from_folder)
    try:
        run(cfg)
    except (SourceError, CheckpointError) as e:
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


def _codec_eval(args) -> int:
    from data_sim.sources import SourceError
    from l3se.cli import UserError
    from l3se.cli.evaluate import _pairs
    from l3se.enhancer import resolve_device
    from l3se.evaluation import InputError
    from l3se.evaluation.inputs import MANIFEST_NAME
    from l3se.models.weights import WEIGHTS_FILE
    from recipes.codec_eval import FLOOR, load, run

    codecs = {name: Path(path) for name, path in _pairs(args.codec, "--codec").items()}
    if FLOOR in codecs:
        raise UserError(f"--codec: {FLOOR!r} names the references' own row; pick another name")
    for name, path in codecs.items():
        if not (path / WEIGHTS_FILE).is_file():
            raise UserError(f"--codec {name}: {path} is not a saved codec (no {WEIGHTS_FILE})")
    evalset = args.ref if args.ref.is_dir() or args.ref.name != MANIFEST_NAME else args.ref.parent
    if not (evalset / MANIFEST_NAME).is_file():
        raise UserError(f"--ref: no {MANIFEST_NAME} in {evalset}: build the eval set first "
                        "(`l3se data evalset OUT --config paper`, or tiny)")
    overrides = list(args.overrides)
    if args.lm_steps is not None:
        overrides.append(f"token_lm.steps={args.lm_steps}")
    if args.metrics:
        overrides.append(f"metrics={args.metrics}")
    cfg = load(args.config, overrides)
    cfg.models |= {k: v for k, v in _pairs(args.model, "--model").items() if v is not None}
    if cfg.token_lm is not None and not Path(cfg.token_lm.speech).exists():
        raise UserError(f"token_lm.speech: {cfg.token_lm.speech} not found (the token LM's "
                        "training speech; token_lm=null leaves the LM out)")
    if (args.files is not None and args.files < 1) or (args.workers is not None
                                                       and args.workers < 1):
        raise UserError("--files and --workers must be at least 1")
    try:
        run(codecs, evalset, args.out, cfg, files=args.files, workers=args.workers,
            local_only=not args.download, device=str(resolve_device(args.device)))
    except (InputError, SourceError) as e:
        raise UserError(str(e)) from None
    return 0
