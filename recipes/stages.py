"""The training stages, in the order they run, and the one way each is launched.

A stage is a recipe script (``recipes/train_<x>.py``: its config class, a subclass of
``RecipeConfig``, and ``build_task(stage, cfg)``), a folder of named configs
(``recipes/configs/<folder>/<name>.yaml``) and the config fields that name earlier stages'
exported models. ``l3se train STAGE`` and ``python recipes/train_<x>.py STAGE`` (what
``torchrun`` starts) both parse their arguments with ``add_stage_parsers`` and call
``run_stage``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from l3se.config import ConfigError, load_config
from l3se.console import UserError, run_command

if TYPE_CHECKING:
    from l3se.training.options import RecipeConfig

CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    # recipes/<script>.py, defining the class `config_name` and build_task(stage, cfg).
    # Imported on use: it pulls in torch, and `l3se --help` lists the stages without it.
    script: str
    config_name: str
    folder: str
    # Config field -> the stage whose exported model (<output_dir>/model) it names.
    upstream: dict[str, str] = field(default_factory=dict)

    @property
    def recipe(self) -> ModuleType:
        return importlib.import_module(f"recipes.{self.script}")

    @property
    def config_class(self) -> type[RecipeConfig]:
        return getattr(self.recipe, self.config_name)


STAGES = {
    s.name: s
    for s in (
        Stage("codec-1", "WavCodec, generator only (mel + codebook + commitment losses)",
              "train_codec", "CodecRecipeConfig", "codec1"),
        Stage("codec-2", "WavCodec with DAC's discriminators, from codec-1's model",
              "train_codec", "CodecRecipeConfig", "codec2", {"init_from": "codec-1"}),
        Stage("s2t", "WavS2T semantic teacher: speech prefix -> frozen Qwen3 transcript (or CTC)",
              "train_s2t", "S2TRecipeConfig", "s2t", {"backbone_from": "codec-2"}),
        Stage("distill",
              "NI-Encoder: noisy student distilled from the clean WavCodec/WavS2T encoders",
              "train_distill", "DistillRecipeConfig", "distill",
              {"codec": "codec-2", "s2t": "s2t"}),
        Stage("lm", "Qwen3 LM: NI-Encoder prefix -> clean WavCodec tokens; exports the enhancer",
              "train_lm", "LMRecipeConfig", "lm", {"codec": "codec-2", "ni_encoder": "distill"}),
    )
}


def resolve_config(folder: str, name_or_path: str | Path) -> Path:
    """A name (``tiny``, ``paper``, ...) -> ``recipes/configs/<folder>/<name>.yaml``; anything
    with a YAML suffix or a path separator is a path, kept as it is."""
    name = str(name_or_path)
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    path = CONFIGS / folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (CONFIGS / folder).glob("*.yaml")))
        raise ConfigError(f"no config named {name!r} in recipes/configs/{folder}; available: {known}")
    return path


def upstream_model(stage: str, cfg: RecipeConfig, key: str) -> Path:
    """The exported model directory that ``cfg.<key>`` names; a missing one is a ConfigError
    that says which stage writes it."""
    path = Path(getattr(cfg, key))
    if not path.is_dir():
        source = STAGES[stage].upstream.get(key)  # none: any model (codec-1's init_from)
        hint = (f" (it is {source}'s exported model: run `l3se train {source}` first or point "
                f"{key} at it)") if source else ""
        raise ConfigError(f"{key}: {path} does not exist{hint}")
    return path


def run_stage(name: str, config: str | Path = "tiny", overrides: Sequence[str] = (),
              stop_at: int | None = None) -> Path:
    """Train stage ``name`` with a named config or YAML path plus ``key.sub=value`` overrides
    (stopping with a checkpoint at step ``stop_at``); returns its output directory. Under
    torchrun every process runs this."""
    from l3se.training.distributed import seed_everything
    from l3se.training.engine import train_stage

    stage = STAGES[name]
    cfg = load_config(stage.config_class, resolve_config(stage.folder, config), overrides)
    # Same seed on every rank: identical initial weights before the engine's broadcast.
    seed_everything(cfg.train.seed)
    task = stage.recipe.build_task(name, cfg)
    return train_stage(task, cfg, name, stop_at)


def add_stage_parsers(sub: argparse._SubParsersAction) -> None:
    """One subcommand per stage: ``STAGE [--config NAME|PATH] [--stop-at STEP] [KEY=VALUE ...]``."""
    for stage in STAGES.values():
        p = sub.add_parser(
            stage.name,
            help=stage.help,
            description=f"Train {stage.name}. Resumes from the newest checkpoint in "
            "train.output_dir unless train.resume=false.",
        )
        p.add_argument(
            "--config",
            default="tiny",
            help=f"tiny, paper (recipes/configs/{stage.folder}/NAME.yaml) or a YAML path",
        )
        p.add_argument(
            "--stop-at",
            type=int,
            metavar="STEP",
            help="stop (with a checkpoint) at this step; run again to continue",
        )
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=500")
        p.set_defaults(func=train)


def train(args: argparse.Namespace) -> int:
    """The handler of a stage subcommand."""
    from data_sim.sources import SourceError
    from l3se.training.checkpoint import CheckpointError

    try:
        out = run_stage(args.stage, args.config, args.overrides, stop_at=args.stop_at)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    except SourceError as e:
        raise UserError(
            f"{e} (the tiny configs read the offline starter corpus: build it with "
            "`l3se recipe quickstart`, or point data.speech / valid.speech elsewhere)"
        ) from None
    print(f"[{args.stage}] done: {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python recipes/train_<x>.py STAGE ...``: ``l3se train`` without the l3se command."""
    parser = argparse.ArgumentParser(prog="l3se train", description="Train a stage of the L3-SE "
                                     "recipe (every torchrun process runs the same command).")
    add_stage_parsers(parser.add_subparsers(dest="stage", metavar="STAGE", required=True))
    args = parser.parse_args(argv)
    return run_command(args.func, args)
