"""What codec-3's extra objectives see, and what they give back.

codec-3 fine-tunes a trained WavCodec with objectives that judge its output by what a language
model makes of it: the ASR-consistency loss and the Timed-Text Regularizer (seeds 000/001,
``l3se.models.asr_loss``, ``l3se.models.ttr``) and the LLM-Codec objectives (seeds 003/004,
``l3se.models.llm_codec``). Each is a ``CodecObjective``: ``CodecTask`` hands it one
``CodecStep`` per micro-batch and adds the weighted loss it returns to the codec's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# [(word, start seconds, end seconds), ...] of one utterance, in time order.
WordTimes = list[tuple[str, float, float]]


@dataclass
class CodecStep:
    clean: torch.Tensor  # [B, S] the codec's input
    recon: torch.Tensor  # [B, S] its reconstruction, padding zeroed (carries the gradient)
    lengths: torch.Tensor  # [B] valid samples
    codes: torch.Tensor  # [B, Q, T12] the codec's own tokens
    # [B, D, T12] the quantized latent the decoder reads; the quantizer's straight-through
    # estimator lets its gradient reach the encoder.
    quantized: torch.Tensor
    texts: list[str | None]  # transcripts (None for a crop or an utterance without one)
    words: list[WordTimes | None]  # word timings within the clip (None when unknown)
    step: int  # the optimizer step, for schedules
    # What identifies each clean clip (utterance id, crop offset and length; None when
    # unknown): the same key means the same input, so what a frozen judge makes of it can be
    # kept.
    clips: list[str | None] = field(default_factory=list)


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, already weighted (schedule included): added to the total
    # Unweighted parts, detached, logged as <name>/<key>. The same keys on every call: with
    # several processes, every rank must log what the others do.
    logs: dict[str, torch.Tensor]
    # For a log averaged over a varying number of items: that number (0 when none had the
    # term; its value is then ignored). Keys left out count 1.
    counts: dict[str, torch.Tensor] = field(default_factory=dict)


class CodecObjective(nn.Module):
    """An extra objective of codec-3. Its frozen models (a judge, an LLM) go through
    ``l3se.models.frozen.freeze``, so checkpoints leave them out and resuming reloads them from
    the config; its trainable modules (heads, embeddings) train with the codec."""

    # The prefix of its logged values.
    name: str = "objective"

    def forward(self, step: CodecStep) -> ObjectiveOutput:
        raise NotImplementedError

    def export(self, path: Path) -> None:
        """Write, beside the exported codec in ``path``, what a later stage can start from
        (default: nothing)."""
