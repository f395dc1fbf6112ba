"""What a training stage hands the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar to minimise
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # scalars to log (detached)
    # How many items a log value averages, for the keys where that varies (default 1; 0: none,
    # the value is ignored). The logged value is the count-weighted mean over micro-batches and
    # processes, so a term only some batches have is not diluted by the others.
    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    # Whatever the discriminator step needs from this generator step (e.g. detached fakes).
    cache: Any = None


@dataclass
class ValOutput:
    metrics: dict[str, torch.Tensor]  # scalars, averaged over the validation batches
    audio: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, S] to listen to


class Task(nn.Module):
    """A stage's trainable modules and its losses. The engine calls, per optimizer step:
    ``training_step`` on each micro-batch (generator update), then, when ``discriminator`` is
    set, ``discriminator_step`` on each micro-batch's cache (discriminator update).

    Checkpoints hold what trains. A frozen part (a submodule passed to
    ``l3se.models.frozen.freeze``, which also keeps it in eval mode through every ``train()``, or
    one none of whose parameters require grad) is not saved: resuming rebuilds the task, so the
    constructor must load it from its source the same way every time; the checkpoint only checks
    its fingerprint.
    """

    sample_rate = 16000
    # Optimizer steps at the start that update only the discriminator (a discriminator warm-up):
    # ``training_step`` then runs without gradients, only to feed the discriminator, and the
    # generator's learning-rate schedule starts with its first update.
    generator_warmup = 0

    def __init__(self):
        super().__init__()
        self.discriminator: nn.Module | None = None

    def generator_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the discriminator."""
        skip = set()
        if self.discriminator is not None:
            skip = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    def updates_generator(self, step: int) -> bool:
        """Whether optimizer step ``step`` updates the generator (see ``generator_warmup``)."""
        return step >= self.generator_warmup

    def training_step(self, batch: dict, step: int) -> StepOutput:
        raise NotImplementedError

    def discriminator_step(self, cache: Any, step: int) -> StepOutput:
        raise NotImplementedError(f"{type(self).__name__} has no discriminator")

    def validation_step(self, batch: dict) -> ValOutput:
        raise NotImplementedError

    def log_extras(self) -> dict[str, float]:
        """Extra scalars at each logging step (e.g. codebook use, layer-mixture weights)."""
        return {}

    def export(self, path: Path) -> None:
        """Write the trained component as a ``from_pretrained`` directory."""
        raise NotImplementedError
