"""The distill stage: NI-Encoder trained on simulated noisy speech towards the frozen clean-speech
teacher encoders (WavCodec from codec-2, WavS2T from s2t); paper section 3.2, Table 3.

    l3se train distill --config tiny
    torchrun --nproc_per_node 8 recipes/train_distill.py distill --config paper
    l3se train distill --config paper_acoustic_only      # Table 3 (b); likewise paper_fixed_layers
                                                         # (d), paper_ctc (e), paper_no_distill (a)

Named configs are ``recipes/configs/distill/<name>.yaml``. Each run writes
``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}``; ``model/`` is an
``NIEncoder.from_pretrained`` directory with ``layer_weights.png`` (Figure 4).

``loss.targets: none`` (Table 3 (a), no distillation) trains nothing: the stage writes the
teacher-initialised encoder (WavCodec's encoder, plus WavS2T's when ``s2t`` is set) straight to
``model/``, so the lm stage conditions on the undistilled teachers applied to noisy speech.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from data_sim.dataset import DataConfig
from l3se.config import ConfigError, load_config, save_config
from l3se.models.ni_encoder import NIEncoderConfig
from l3se.training.distill_task import DistillLossConfig
from l3se.training.options import OptimConfig, TrainConfig

STAGES = ("distill",)


@dataclass
class DistillRecipeConfig:
    # The acoustic teacher: codec-2's exported model directory.
    codec: str = "runs/codec2-paper/model"
    # The semantic teacher: the s2t stage's exported model; null for acoustic-only runs.
    s2t: str | None = "runs/s2t-paper/model"
    # null: the teachers' architecture (and weights) for the student.
    student: NIEncoderConfig | None = None
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    valid: DataConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def _load_teacher(kind: str, path: str, stage: str):
    if not Path(path).is_dir():
        raise ConfigError(
            f"{kind}: {path} does not exist (the distill stage reads the {stage} stage's exported "
            f"model: run `l3se train {stage}` first or point {kind} at it)"
        )
    if kind == "codec":
        from l3se.models.codec import WavCodec

        return WavCodec.from_pretrained(path)
    from l3se.models.s2t import WavS2T

    return WavS2T.from_pretrained(path)


def build_task(stage: str, cfg: DistillRecipeConfig):
    from l3se.models.ni_encoder import NIEncoder
    from l3se.training.distill_task import DistillTask

    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    targets = cfg.loss.targets
    if targets == "teachers" and cfg.s2t is None:
        raise ConfigError("loss.targets 'teachers' distils WavS2T too: set s2t")
    if targets == "acoustic" and cfg.s2t is not None:
        raise ConfigError("loss.targets 'acoustic' uses no semantic teacher: set s2t to null")
    codec = _load_teacher("codec", cfg.codec, "codec-2")
    s2t = _load_teacher("s2t", cfg.s2t, "s2t") if cfg.s2t is not None else None
    semantic = targets != "acoustic" and (s2t is not None or targets == "fixed_layers")
    if targets == "fixed_layers" and s2t is None and cfg.student is None:
        raise ConfigError("fixed_layers needs a semantic head: set s2t (to copy) or student")
    try:
        student = NIEncoder.from_teachers(codec, s2t, semantic=semantic, cfg=cfg.student)
        teacher = NIEncoder.from_teachers(codec, s2t, semantic=targets == "teachers")
        return DistillTask(student, teacher, cfg.loss)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def run(stage: str, config: str | Path, overrides: list[str] = (), stop_at: int | None = None):
    """Train ``stage`` with the YAML ``config`` plus ``key=value`` overrides; returns the
    output directory."""
    from l3se.training.distributed import seed_everything
    from l3se.training.engine import train_stage

    cfg = load_config(DistillRecipeConfig, config, overrides)
    for name, data in (("data", cfg.data), ("valid", cfg.valid)):
        if data is not None and not (data.noise and data.mix.p_noise > 0):
            raise ConfigError(f"{name}: the student learns from noisy speech; set {name}.noise "
                              f"and {name}.mix.p_noise > 0")
    # Same seed on every rank: identical initial weights before the engine's broadcast.
    seed_everything(cfg.train.seed)
    task = build_task(stage, cfg)
    output_dir = Path(cfg.train.output_dir)
    if cfg.loss.targets == "none":
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")
        task.export(output_dir / "model")
        return output_dir
    return train_stage(task, cfg, stage, stop_at)


if __name__ == "__main__":
    from l3se.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
