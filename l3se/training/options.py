"""Config sections shared by every training recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data_sim.dataset import DataConfig
from l3se.config import ConfigError


@dataclass
class ParamGroupConfig:
    """Parameters of one network that train with their own settings (unset: the section's). The
    schedule's shape (warmup, cosine) is the network's; only its peak and floor are the
    group's."""

    # Parameter names in the task, or prefixes of them at a module boundary: e.g.
    # "objectives.llm_codec.heads" takes every parameter under that module.
    params: list[str] = field(default_factory=list)
    optimizer: Literal["adamw", "sgd"] | None = None
    lr: float | None = None
    min_lr: float | None = None
    weight_decay: float | None = None


@dataclass
class OptimConfig:
    """One network's optimizer (AdamW or SGD) with linear warmup then cosine decay from ``lr`` to
    ``min_lr`` over the network's own updates; ``groups`` give named parameters their own
    optimizer, rate or weight decay."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 1000
    # DAC's AdamW settings; the paper names AdamW only.
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    eps: float = 1e-8
    # Gradient-norm clip; null: none (the norm is still logged).
    grad_clip: float | None = 1000.0
    # SGD's momentum (AdamW ignores it).
    momentum: float = 0.9
    groups: list[ParamGroupConfig] = field(default_factory=list)


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    max_steps: int = 100_000
    # Examples per process (GPU) in one forward/backward pass, as in torchtune and DAC: the
    # paper's Table 1 batches are per GPU. An optimizer step averages the gradients of
    # grad_accum such passes on every process, so its global batch is
    # batch_size x world_size x grad_accum (`global_batch`); more processes see more examples.
    # optim.lr is not rescaled with it: the paper configs' rates go with 8 GPUs.
    batch_size: int = 16
    grad_accum: int = 1
    num_workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch CPU threads per process when training on the CPU; null: OMP_NUM_THREADS when set,
    # else 1. One thread kept 95% of two threads' speed on an idle 2-core machine and was 3x
    # faster beside another busy process, where two OpenMP threads spin against it
    # (`benchmarks/bench_train.py --layouts`, docs/benchmarks.md).
    threads: int | None = None
    # auto: bf16 autocast on CUDA, fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    log_every: int = 50
    val_every: int = 1000
    val_batches: int = 8
    # Validation examples written to TensorBoard as audio.
    audio_samples: int = 2
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    # Continue from the newest checkpoint in output_dir when there is one.
    resume: bool = True
    progress: bool = True

    def global_batch(self, world_size: int) -> int:
        """Examples per optimizer step over ``world_size`` processes; a ConfigError when the
        launch cannot run."""
        for name, value in (("train.batch_size", self.batch_size),
                            ("train.grad_accum", self.grad_accum), ("the world size", world_size)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        return self.batch_size * world_size * self.grad_accum

    def batch_summary(self, world_size: int) -> str:
        return (f"batch: {self.batch_size} per process x {world_size} processes x "
                f"{self.grad_accum} accumulation = {self.global_batch(world_size)} per step")


@dataclass
class RecipeConfig:
    """The sections every stage's config has (what ``engine.train_stage`` reads); a recipe's
    config class adds its models, losses and the exported models it starts from."""

    data: DataConfig = field(default_factory=DataConfig)
    valid: DataConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # The discriminator's optimizer, for a stage that trains one (codec-2).
    optim_d: OptimConfig | None = None

    def data_sections(self) -> dict[str, DataConfig]:
        """The data sections in use, by config key (``valid`` may be off)."""
        return {k: v for k, v in (("data", self.data), ("valid", self.valid)) if v is not None}
