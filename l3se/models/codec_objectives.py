"""What codec-3's extra objectives see, and what they give back.

codec-3 fine-tunes a trained WavCodec with objectives that judge its output by what a language
model makes of it: the ASR-consistency loss and the Timed-Text Regularizer (seeds 000/001,
``l3se.models.asr_loss``, ``l3se.models.ttr``) and the LLM-Codec objectives (seeds 003/004,
``l3se.models.llm_codec``). Each is a ``CodecObjective``: ``CodecTask`` hands it one
``CodecStep`` per micro-batch and adds the weighted loss it returns to the codec's own.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, already weighted (schedule included): added to the total
    logs: dict[str, torch.Tensor]  # unweighted parts, detached, logged as <name>/<key>


class CodecObjective(nn.Module):
    """An extra objective of codec-3. Its frozen models (a judge, an LLM) have no trainable
    parameter and stay in eval mode, so checkpoints leave them out and resuming reloads them
    from the config; its trainable modules (heads, embeddings) train with the codec."""

    # The prefix of its logged values.
    name: str = "objective"

    def forward(self, step: CodecStep) -> ObjectiveOutput:
        raise NotImplementedError
