"""``l3se train STAGE``: run one stage of the training recipe.

Each stage is a recipe module with ``run(stage, config_path, overrides, stop_at)``; ``--config``
takes a name (``recipes/configs/<folder>/<name>.yaml``) or a YAML path, then ``key.sub=value``
overrides. Under ``torchrun`` every process runs the same command.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# stage -> (recipe module, config folder under recipes/configs)
STAGES = {
    "codec-1": ("recipes.train_codec", "codec1"),
    "codec-2": ("recipes.train_codec", "codec2"),
    "s2t": ("recipes.train_s2t", "s2t"),
    "distill": ("recipes.train_distill", "distill"),
    "lm": ("recipes.train_lm", "lm"),
}

HELP = {
    "codec-1": "WavCodec, generator only (mel + codebook + commitment losses)",
    "codec-2": "WavCodec with DAC's discriminators, from codec-1's model",
    "s2t": "WavS2T semantic teacher: speech prefix -> frozen Qwen3 transcript (or CTC)",
    "distill": "NI-Encoder: noisy student distilled from the clean WavCodec/WavS2T encoders",
    "lm": "Qwen3 LM: NI-Encoder prefix -> clean WavCodec tokens; exports the enhancer",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a stage of the L3-SE recipe")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, (module, folder) in STAGES.items():
        s = stages.add_parser(
            stage,
            help=HELP.get(stage, stage),
            description=f"Train {stage}. Resumes from the newest checkpoint in "
            "train.output_dir unless train.resume=false.",
        )
        s.add_argument(
            "--config",
            default="tiny",
            help=f"tiny, paper (recipes/configs/{folder}/NAME.yaml) or a YAML path",
        )
        s.add_argument(
            "--stop-at",
            type=int,
            metavar="STEP",
            help="stop (with a checkpoint) at this step; run again to continue",
        )
        s.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=500")
        s.set_defaults(func=_train, module=module, folder=folder)


def resolve_config(folder: str, name: str) -> Path:
    from l3se.cli import UserError

    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        return path
    import recipes

    root = Path(recipes.__file__).parent / "configs" / folder
    path = root / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in root.glob("*.yaml"))
        raise UserError(f"no config named {name!r} for this stage; known: {', '.join(known)}")
    return path


def _train(args) -> int:
    from data_sim.sources import SourceError
    from l3se.cli import UserError
    from l3se.training.checkpoint import CheckpointError

    path = resolve_config(args.folder, args.config)
    recipe = importlib.import_module(args.module)
    try:
        out = recipe.run(args.stage, path, args.overrides, stop_at=args.stop_at)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    except SourceError as e:
        raise UserError(
            f"{e} (the tiny configs read the offline starter corpus: build it with "
            "`l3se recipe quickstart`, or point data.speech / valid.speech elsewhere)"
        ) from None
    print(f"[{args.stage}] done: {out}")
    return 0
