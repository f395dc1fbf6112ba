"""The distill stage: NI-Encoder on noisy speech -> frozen clean-speech targets (paper eq. 1).

Targets (``DistillLossConfig.targets``, Table 3):
    teachers      WavCodec's encoder latent [B, T12, Da] + WavS2T's encoder output [B, T50, Ds]
    acoustic      WavCodec's encoder latent only (b)
    fixed_layers  the frozen WavLM's hidden state 0 pooled 4x to 12.5 Hz + its last one (d)
    none          no training: the teacher-initialised encoder as is (a; see the recipe)
    self          not in the paper: the student's own starting weights, frozen, on clean speech
                  (both branches). Fine-tuning a trained NI-Encoder to new noise this way keeps
                  the output space that an LM trained on it reads, and needs no teachers.

The teachers are held as one frozen ``NIEncoder`` copied from WavCodec and WavS2T: its branches
are exactly ``codec.encode_latent`` and ``s2t.encode`` (same weights, same padding), but the
clean input goes through their shared WavLM once, and neither the codec's decoder nor the
WavS2T's text LLM is loaded onto the device or written into checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from l3se.models.frozen import freeze
from l3se.models.heads import frame_padding_mask
from l3se.models.ni_encoder import NIEncoder, NIOutput
from l3se.models.s2t import FRAMES_PER_TOKEN
from l3se.training.plots import plot_layer_weights
from l3se.training.task import StepOutput, Task, ValOutput

TARGETS = ("teachers", "acoustic", "fixed_layers", "none", "self")
PLOT_FILE = "layer_weights.png"


@dataclass
class DistillLossConfig:
    targets: Literal["teachers", "acoustic", "fixed_layers", "none", "self"] = "teachers"
    # The seed text lost eq. 1's weights; an unweighted sum is its plain reading.
    acoustic: float = 1.0
    semantic: float = 1.0


@dataclass
class Targets:
    acoustic: torch.Tensor  # [B, T12, Da]
    semantic: torch.Tensor | None  # [B, T50, Ds]


def masked_mse(x: torch.Tensor, y: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the valid frames of [B, T, D] tensors (padding [B, T], True =
    padded); padded frames hold whatever the model makes of silence and are no target."""
    err = (x.float() - y.float()).square()
    if padding is None:
        return err.mean()
    valid = (~padding).unsqueeze(-1).to(err.dtype)
    return (err * valid).sum() / (valid.sum() * err.shape[-1]).clamp_min(1.0)


class DistillTask(Task):
    """Trains ``student`` (NI-Encoder, WavLM included) towards ``teacher`` (a frozen NI-Encoder
    made by ``NIEncoder.from_teachers``); the student sees batch["noisy"], the teacher
    batch["clean"]."""

    def __init__(self, student: NIEncoder, teacher: NIEncoder, loss: DistillLossConfig | None = None):
        super().__init__()
        self.loss_cfg = loss or DistillLossConfig()
        targets = self.loss_cfg.targets
        if targets not in TARGETS:
            raise ValueError(f"unknown targets {targets!r}; choose from {', '.join(TARGETS)}")
        if targets == "acoustic" and student.semantic is not None:
            raise ValueError("acoustic-only distillation trains a student without semantic head")
        if targets in ("teachers", "fixed_layers") and student.semantic is None:
            raise ValueError(f"targets {targets!r} need a student with a semantic head")
        if targets == "teachers" and teacher.semantic is None:
            raise ValueError("targets 'teachers' need the WavS2T teacher's semantic branch")
        if targets == "self" and (teacher.semantic is None) != (student.semantic is None):
            raise ValueError("targets 'self' need a teacher with the student's branches")
        if targets in ("teachers", "acoustic", "self"):
            # A student loaded with init_from brings its own head sizes.
            sizes = [("acoustic", student.acoustic_dim, teacher.acoustic_dim)]
            if targets != "acoustic":
                sizes.append(("semantic", student.semantic_dim, teacher.semantic_dim))
            for branch, mine, theirs in sizes:
                if mine != theirs:
                    raise ValueError(f"the student's {branch} output has {mine} channels, "
                                     f"its targets {theirs}")
        if targets == "fixed_layers":
            hidden = teacher.ssl.hidden_size
            if student.acoustic_dim != hidden or student.semantic_dim != hidden:
                raise ValueError(
                    f"fixed-layer targets are WavLM hidden states of size {hidden}: the student's "
                    f"heads output {student.acoustic_dim} (acoustic) and {student.semantic_dim} "
                    "(semantic)"
                )
        self.student = student
        # Dropout, layerdrop or SpecAugment in the teacher would make the targets noisy.
        self.teacher = freeze(teacher)

    @torch.no_grad()
    def targets(self, clean: torch.Tensor, lengths: torch.Tensor | None) -> Targets:
        """Clean speech [B, S] -> the student's regression targets."""
        if self.loss_cfg.targets == "fixed_layers":
            # Table 3 (d)'s L0 and L24 are the states the layer mixtures weight as such (see
            # ``WavLMBackbone``): the input of the first transformer layer, and the output of
            # the last one before WavLM's final LayerNorm.
            states = self.teacher.hidden_states(clean, lengths)
            pooled = F.avg_pool1d(
                states[0].transpose(1, 2), kernel_size=FRAMES_PER_TOKEN
            ).transpose(1, 2)
            return Targets(pooled, states[-1])
        out = self.teacher(clean, lengths)
        semantic = out.semantic if self.loss_cfg.targets in ("teachers", "self") else None
        return Targets(out.acoustic, semantic)

    def losses(self, out: NIOutput, target: Targets, lengths: torch.Tensor | None) -> dict:
        """Student output vs targets -> {"acoustic", ["semantic"], "loss"} scalars."""
        cfg = self.loss_cfg
        hop = self.student.frame_length
        acoustic_pad = frame_padding_mask(lengths, out.acoustic.shape[1], hop)
        logs = {"acoustic": masked_mse(out.acoustic, target.acoustic, acoustic_pad)}
        loss = cfg.acoustic * logs["acoustic"]
        if target.semantic is not None:
            semantic_pad = frame_padding_mask(lengths, out.semantic.shape[1], self.student.ssl.hop)
            logs["semantic"] = masked_mse(out.semantic, target.semantic, semantic_pad)
            loss = loss + cfg.semantic * logs["semantic"]
        logs["loss"] = loss
        return logs

    def training_step(self, batch: dict, step: int) -> StepOutput:
        lengths = batch["lengths"]
        target = self.targets(batch["clean"], lengths)
        logs = self.losses(self.student(batch["noisy"], lengths), target, lengths)
        return StepOutput(loss=logs["loss"], logs={k: v.detach() for k, v in logs.items()})

    def validation_step(self, batch: dict) -> ValOutput:
        lengths = batch["lengths"]
        target = self.targets(batch["clean"], lengths)
        metrics = self.losses(self.student(batch["noisy"], lengths), target, lengths)
        if self.loss_cfg.targets != "fixed_layers":
            # The same losses for the undistilled teacher on the noisy input: the margin the
            # student has gained in noise invariance.
            baseline = self.losses(self.teacher(batch["noisy"], lengths), target, lengths)
            metrics.update({f"{k}_teacher_on_noisy": v for k, v in baseline.items()})
        return ValOutput(metrics=metrics, audio={"noisy": batch["noisy"], "clean": batch["clean"]})

    def layer_weights(self) -> dict[str, list[float]]:
        """Figure 4's series: "<branch>_<teacher|student>" -> [L] mixture weights."""
        out = {}
        if self.loss_cfg.targets != "fixed_layers":
            for branch, w in self.teacher.mixture_weights().items():
                if branch == "acoustic" or self.loss_cfg.targets in ("teachers", "self"):
                    out[f"{branch}_teacher"] = w
        for branch, w in self.student.mixture_weights().items():
            out[f"{branch}_student"] = w
        return out

    def log_extras(self) -> dict[str, float]:
        return {
            f"mixture/{name}/layer_{i:02d}": w
            for name, weights in self.layer_weights().items()
            for i, w in enumerate(weights)
        }

    def export(self, path: Path) -> None:
        self.student.save_pretrained(path)
        plot_layer_weights(self.layer_weights(), Path(path) / PLOT_FILE)
