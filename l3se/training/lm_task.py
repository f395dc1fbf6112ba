"""The lm stage: noisy speech -> frozen NI-Encoder -> prefix -> SpeechLM -> clean codec tokens.

Targets are made on the fly: the frozen WavCodec encodes the clean utterance into codes
[B, Q, T12] (teacher forcing, next-token cross-entropy). Export writes the whole enhancer model
directory (``l3se.enhancer``): NI-Encoder, SpeechLM and WavCodec side by side.
"""

from __future__ import annotations

from pathlib import Path

import torch

from l3se.decoding import generate
from l3se.enhancer import EnhancerConfig, save_enhancer
from l3se.models.codec import WavCodec
from l3se.models.frozen import freeze
from l3se.models.lm import SpeechLM
from l3se.models.ni_encoder import NIEncoder
from l3se.training.task import StepOutput, Task, ValOutput


class LMTask(Task):
    def __init__(
        self, lm: SpeechLM, ni_encoder: NIEncoder, codec: WavCodec,
        enhancer: EnhancerConfig | None = None,
    ):
        super().__init__()
        self.enhancer = enhancer or EnhancerConfig()
        self.lm = lm
        self.ni_encoder = freeze(ni_encoder)
        self.codec = freeze(codec)

    def _prefix(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """noisy [B, S] -> (prefix [B, T12, H], frame lengths [B] = ceil(lengths / 1280))."""
        with torch.no_grad():
            feats = self.ni_encoder(batch["noisy"], batch["lengths"])
        return self.lm.prefix(feats.acoustic, feats.semantic), feats.frame_lengths

    def _loss(self, batch: dict):
        prefix, frame_lengths = self._prefix(batch)
        with torch.no_grad():
            codes = self.codec.encode(batch["clean"], batch["lengths"])
        return self.lm(prefix, frame_lengths, codes), prefix, frame_lengths

    def training_step(self, batch: dict, step: int) -> StepOutput:
        out, _, _ = self._loss(batch)
        return StepOutput(
            loss=out.loss, logs={"loss": out.loss.detach(), "accuracy": out.accuracy.detach()}
        )

    def validation_step(self, batch: dict) -> ValOutput:
        out, prefix, frame_lengths = self._loss(batch)
        # One decode per validation batch (with the exported decoding settings) keeps validation
        # cheap at paper scale.
        n = int(frame_lengths[0])
        codes = generate(self.lm, prefix[:1, :n], frame_lengths[:1], self.enhancer.decode,
                         entries=self.codec.entry_vectors())
        length = int(batch["lengths"][0])
        audio = {
            "noisy": batch["noisy"][:1, :length],
            "clean": batch["clean"][:1, :length],
            "enhanced": self.codec.decode(codes, length),
        }
        return ValOutput(metrics={"loss": out.loss, "accuracy": out.accuracy}, audio=audio)

    def export(self, path: Path) -> None:
        save_enhancer(path, self.ni_encoder, self.lm, self.codec, self.enhancer)
