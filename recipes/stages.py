"""The training stages, in the order they run, and the one way each is launched.

A stage is a recipe script (``recipes/train_<x>.py``: its config class, a subclass of
``RecipeConfig``, and ``build_task(stage, cfg, load=load_upstream)``, which loads earlier stages'
models with ``load``, a ``Loader``), a folder of named configs (``recipes/configs/<folder>/<name>.yaml``) and the
config fields that name earlier stages' exported models. ``l3se train STAGE`` and
``python recipes/train_<x>.py STAGE`` (what ``torchrun`` starts) both parse their arguments with
``add_stage_parsers`` and call ``run_stage`` (or, with ``--check``, ``check_launch``).

``build_offline`` builds a stage's task with random weights and no data, hub or earlier weights
(on the meta device for ``--check``, on the GPU for ``benchmarks/bench_gpu.py``), passing its own
loader: an earlier stage's model comes from its saved config or, when not trained yet, from the
config of the stage that writes it.

What the user got wrong (a config value, a path its config names that holds no model) is a
one-line ``ConfigError``; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from l3se.config import ConfigError, load_config
from l3se.console import UserError, run_command

if TYPE_CHECKING:
    from torch import nn

    from l3se.training.options import RecipeConfig
    from l3se.training.task import Task

CONFIGS = Path(__file__).parent / "configs"

# (stage, its config, the config key naming an earlier stage's model, the model's class) -> that
# model: ``load_upstream``, or ``build_offline``'s random-weight stand-in.
Loader = Callable[[str, "RecipeConfig", str, type], "nn.Module"]


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
    # The task attribute holding the model that <output_dir>/model saves, for later stages.
    exported: str | None = None
    # Outside the paper's five-stage pipeline (the quickstart and the GPU benchmark skip it).
    optional: bool = False

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
              "train_codec", "CodecRecipeConfig", "codec1", exported="codec"),
        Stage("codec-2", "WavCodec with DAC's discriminators, from codec-1's model",
              "train_codec", "CodecRecipeConfig", "codec2", {"init_from": "codec-1"}, "codec"),
        Stage("s2t", "WavS2T semantic teacher: speech prefix -> frozen Qwen3 transcript (or CTC)",
              "train_s2t", "S2TRecipeConfig", "s2t", {"backbone_from": "codec-2"}, "model"),
        Stage("ttr", "Timed-Text Regularizer's summariser: WavLM frames per subword -> text "
              "vectors (for codec-3's ttr loss)", "train_ttr", "TTRRecipeConfig", "ttr",
              {"backbone_from": "codec-2"}, "summarizer", optional=True),
        Stage("codec-3", "WavCodec fine-tuned from codec-2's model with language-model "
              "objectives: ASR consistency, TTR, LLM-Codec (optional)", "train_codec",
              "CodecRecipeConfig", "codec3",
              {"init_from": "codec-2", "judge_from": "s2t", "summarizer_from": "ttr"}, "codec",
              optional=True),
        Stage("distill",
              "NI-Encoder: noisy student distilled from the clean WavCodec/WavS2T encoders",
              "train_distill", "DistillRecipeConfig", "distill",
              {"codec": "codec-2", "s2t": "s2t"}, "student"),
        Stage("lm", "Qwen3 LM: NI-Encoder prefix -> clean WavCodec tokens; exports the enhancer",
              "train_lm", "LMRecipeConfig", "lm", {"codec": "codec-2", "ni_encoder": "distill"}),
    )
}


# The paper's pipeline: what the quickstart trains and an enhancer needs.
PIPELINE = [name for name, stage in STAGES.items() if not stage.optional]


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


def load_upstream(stage: str, cfg: RecipeConfig, key: str, cls: type) -> nn.Module:
    """The model ``cfg.<key>`` names, ``cls.from_pretrained`` of it (the training loader); a
    folder that is not there or lacks the model's files is a ConfigError naming ``key``."""
    path = upstream_model(stage, cfg, key)
    try:
        return cls.from_pretrained(path)
    except FileNotFoundError as e:
        raise ConfigError(f"{key}: {e}") from None


class _OfflineBuilder:
    def __init__(self, device: str, saved_models: bool, scale: str | None):
        self.device = device
        self.saved_models = saved_models
        self.scale = scale
        # Config file -> the model its stage exports, built once per build_offline call (the
        # teachers of distill must share one codec-2 WavLM).
        self.exports: dict[Path, nn.Module] = {}
        self.notes: list[str] = []
        # Nesting of upstream builds: only the checked stage's own inputs get a note.
        self.depth = 0

    def task(self, name: str, cfg: RecipeConfig) -> Task:
        import torch

        with torch.device(self.device):
            return STAGES[name].recipe.build_task(name, _offline_recipe(cfg), load=self.upstream)

    def upstream(self, stage: str, cfg: RecipeConfig, key: str, cls: type) -> nn.Module:
        import torch

        from l3se.models.weights import CONFIG_FILE
        from l3se.training.launch_check import offline

        path = Path(getattr(cfg, key))
        if self.saved_models and (path / CONFIG_FILE).is_file():
            # Every model class takes its config as `cfg`; its annotation is the schema.
            schema = typing.get_type_hints(cls.__init__)["cfg"]
            saved = offline(load_config(schema, path / CONFIG_FILE))
            with torch.device(self.device):
                try:
                    return cls(saved)
                except ValueError as e:  # the user's saved model, not l3se's code
                    raise ConfigError(f"{key}: {path / CONFIG_FILE}: {e}") from None
        source = STAGES[stage].upstream.get(key)
        config = _config_writing(source, path, self.scale) if source else None
        if config is None:
            raise ConfigError(f"{key}: {path} does not exist and no config in recipes/configs "
                              "writes it: point it at a trained model")
        if config not in self.exports:
            upstream_cfg = load_config(STAGES[source].config_class, config)
            self.depth += 1
            try:
                task = self.task(source, upstream_cfg)
            finally:
                self.depth -= 1
            self.exports[config] = getattr(task, STAGES[source].exported)
        if self.saved_models and self.depth == 0:
            self.notes.append(f"{key}: {path} is not there yet; built as {_shown(config)} "
                              "would export it")
        return self.exports[config]


def _config_writing(stage: str, model: Path, scale: str | None) -> Path | None:
    """The config of ``stage`` whose run exports ``model`` (its train.output_dir/model), else
    that stage's config named ``scale``."""
    folder = CONFIGS / STAGES[stage].folder
    for path in sorted(folder.glob("*.yaml")):
        out = load_config(STAGES[stage].config_class, path).train.output_dir
        if os.path.normpath(Path(out) / "model") == os.path.normpath(model):
            return path
    same_scale = folder / f"{scale}.yaml"
    return same_scale if scale and same_scale.is_file() else None


def _offline_recipe(cfg: RecipeConfig) -> RecipeConfig:
    from l3se.training.launch_check import offline

    cfg = offline(cfg)
    if getattr(cfg, "tokenizer_from_data", False):
        # s2t trains its tokenizer from data.speech at launch, to at most this many entries.
        model = dataclasses.replace(cfg.model, vocab_size=cfg.model.vocab_size
                                    or cfg.tokenizer_vocab_size)
        cfg = dataclasses.replace(cfg, model=model, tokenizer_from_data=False)
    return cfg


def build_offline(name: str, cfg: RecipeConfig, device: str = "meta", saved_models: bool = True,
                  scale: str | None = None) -> tuple[Task, list[str]]:
    """Stage ``name``'s task for ``cfg`` with random weights on ``device``, reading no data, hub
    or weights: hub backbones from l3se's stored architectures, earlier stages' models from their
    saved configs (``saved_models``) or else from the config of the stage that writes them (the
    one whose output_dir they are, else the one named ``scale``: paper, tiny). Returns the task
    and one note per missing model built from a config."""
    builder = _OfflineBuilder(device, saved_models, scale)
    return builder.task(name, cfg), builder.notes


def missing_paths(name: str, cfg: RecipeConfig) -> list[str]:
    """``key path`` of every data source and earlier model ``cfg`` reads that is not here."""
    missing = []
    for key, data in cfg.data_sections().items():
        used = {"speech": True, "noise": data.mix.p_noise > 0, "rir": data.mix.p_reverb > 0}
        for field_name, needed in used.items():
            value = getattr(data, field_name)
            if needed and value and not Path(value).exists():
                missing.append(f"{key}.{field_name} {value}")
    for key in STAGES[name].upstream:
        value = getattr(cfg, key)
        if value is not None and not Path(value).is_dir():
            missing.append(f"{key} {value}")
    return missing


def check_launch(name: str, config: str | Path = "tiny", overrides: Sequence[str] = (),
                 world_sizes: Sequence[int] = (1,)) -> str:
    """The report of ``l3se train STAGE --check``: whether stage ``name`` can launch on each of
    ``world_sizes`` processes, checked without data, weights or network (every model is built on
    the meta device). Raises ConfigError, in one line, when it cannot."""
    from transformers.utils import logging as hf_logging

    from l3se.training.launch_check import describe_launch

    stage = STAGES[name]
    path = resolve_config(stage.folder, config)
    cfg = load_config(stage.config_class, path, overrides)
    for world in world_sizes:
        cfg.train.global_batch(world)
    # Offline builds give the LM its audio vocabulary at construction, and transformers warns
    # that Qwen3's text bos/eos ids lie outside it (a loaded model swaps the vocabulary after).
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # paper_ctc -> paper: the scale of the earlier stages' configs.
        task, notes = build_offline(name, cfg, scale=path.stem.split("_")[0])
    finally:
        hf_logging.set_verbosity(verbosity)
    lines = [f"{name} launch check: {_shown(path)}", *describe_launch(task, cfg, world_sizes),
             *notes]
    missing = missing_paths(name, cfg)
    if missing:
        lines.append("warning: not here (fine when checking before copying the data and "
                     "models; the run reads them): " + ", ".join(missing))
    counts = ", ".join(map(str, world_sizes))
    lines.append(f"OK: {name} can launch on {counts} processes")
    return "\n".join(lines)


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when inside it."""
    root = CONFIGS.parent.parent
    return path.resolve().relative_to(root) if path.resolve().is_relative_to(root) else path


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


def schedule_overrides(steps: int) -> list[str]:
    """``train.max_steps=steps`` and, for a run shorter than the configs' intervals (under 50
    steps), validation, a checkpoint and a warmup that fit inside it."""
    out = [f"train.max_steps={steps}"]
    if steps < 50:
        out += [f"train.val_every={steps}", f"train.ckpt_every={steps}", "optim.warmup_steps=1"]
    return out


def train_or_reuse(name: str, config: str | Path, overrides: Sequence[str], run_dir: Path,
                   log: Callable[[str], object] = print, tag: str = "l3se") -> float | None:
    """``run_stage`` into ``run_dir`` unless its ``model/`` is already there (an interrupted run
    resumes from its checkpoint); returns the seconds spent, None when reused."""
    import time

    model = run_dir / "model"
    if model.is_dir():
        log(f"[{tag}] {name}: reusing {model}")
        return None
    log(f"[{tag}] {name}: training")
    start = time.perf_counter()
    run_stage(name, config, [*overrides, f"train.output_dir={run_dir}"])
    seconds = time.perf_counter() - start
    log(f"[{tag}] {name}: done in {seconds:.0f} s")
    return seconds


def add_stage_parsers(sub: argparse._SubParsersAction) -> None:
    """One subcommand per stage: ``STAGE [--config NAME|PATH] [--stop-at STEP]
    [--check [--world-size N[,N...]]] [KEY=VALUE ...]``."""
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
        p.add_argument(
            "--check",
            action="store_true",
            help="check the launch instead of training: batch, schedule, paths, models built on "
            "the meta device (no data, weights or network), parameters and memory; exit 0 when "
            "it can run",
        )
        p.add_argument(
            "--world-size",
            type=_process_counts,
            metavar="N[,N...]",
            help="with --check: the process counts to check for, e.g. 8 or 1,2,4,8 (torchrun's "
            "nnodes x nproc_per_node; default $WORLD_SIZE or 1)",
        )
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=500")
        p.set_defaults(func=train)


def _process_counts(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,...: {text!r}") from None


def train(args: argparse.Namespace) -> int:
    """The handler of a stage subcommand."""
    from data_sim.sources import SourceError
    from l3se.training.checkpoint import CheckpointError

    if args.check:
        worlds = args.world_size or [int(os.environ.get("WORLD_SIZE", "1"))]
        print(check_launch(args.stage, args.config, args.overrides, worlds))
        return 0
    if args.world_size is not None:
        raise UserError("--world-size goes with --check; a run takes its world size from torchrun")
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
