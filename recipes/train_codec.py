"""WavCodec training: codec-1 (generator only: multi-scale mel + codebook + commitment) and
codec-2 (adds DAC's discriminators; starts from codec-1's exported model).

    l3se train codec-1 --config tiny
    l3se train codec-2 --config tiny train.max_steps=200
    torchrun --nproc_per_node 8 recipes/train_codec.py codec-1 --config paper

Named configs are ``recipes/configs/codec1/<name>.yaml`` and ``recipes/configs/codec2/<name>.yaml``.
Each run writes ``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}``; ``model/`` is a
``WavCodec.from_pretrained`` directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_sim.dataset import DataConfig
from l3se.config import ConfigError, load_config
from l3se.models.codec import WavCodecConfig
from l3se.models.discriminators import DiscriminatorConfig
from l3se.models.losses import CodecLossConfig
from l3se.training.options import OptimConfig, TrainConfig

STAGES = ("codec-1", "codec-2")


@dataclass
class CodecRecipeConfig:
    # Architecture of a codec trained from scratch (codec-1) ...
    model: WavCodecConfig | None = None
    # ... or the exported model directory to start from (codec-2: codec-1's output_dir/model).
    init_from: str | None = None
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    valid: DataConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Discriminator optimizer, codec-2 only.
    optim_d: OptimConfig | None = None


def build_task(stage: str, cfg: CodecRecipeConfig):
    from l3se.models.codec import WavCodec
    from l3se.models.discriminators import Discriminator
    from l3se.training.codec_task import CodecTask

    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    if (cfg.model is None) == (cfg.init_from is None):
        raise ConfigError("set exactly one of 'model' (train from scratch) and 'init_from'")
    if cfg.init_from is not None:
        if not Path(cfg.init_from).is_dir():
            raise ConfigError(
                f"init_from: {cfg.init_from} does not exist (codec-2 starts from codec-1's "
                f"exported model: run `l3se train codec-1` first or point init_from at it)"
            )
        codec = WavCodec.from_pretrained(cfg.init_from)
    else:
        codec = WavCodec(cfg.model)
    disc = Discriminator(cfg.discriminator, codec.sample_rate) if stage == "codec-2" else None
    return CodecTask(codec, cfg.loss, disc)


def run(stage: str, config: str | Path, overrides: list[str] = (), stop_at: int | None = None):
    """Train ``stage`` with the YAML ``config`` plus ``key=value`` overrides; returns the
    output directory."""
    from l3se.training.distributed import seed_everything
    from l3se.training.engine import train_stage

    cfg = load_config(CodecRecipeConfig, config, overrides)
    for name, data in (("data", cfg.data), ("valid", cfg.valid)):
        if data is not None and (data.mix.p_noise > 0 or data.mix.p_reverb > 0):
            raise ConfigError(f"{name}.mix: the codec learns clean -> clean; set p_noise and "
                              "p_reverb to 0")
    # Same seed on every rank: identical initial weights before the engine's broadcast.
    seed_everything(cfg.train.seed)
    task = build_task(stage, cfg)
    return train_stage(task, cfg, stage, stop_at, optim_d=cfg.optim_d)


if __name__ == "__main__":
    from l3se.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
