"""The WavCodec stages: codec-1 (generator only) and codec-2 (+ discriminator), clean -> clean."""

from __future__ import annotations

from pathlib import Path

from l3se.models.codec import WavCodec
from l3se.models.discriminators import Discriminator
from l3se.models.losses import (
    CodecLossConfig,
    MultiScaleMelLoss,
    discriminator_loss,
    generator_loss,
)
from l3se.training.metrics import CodebookUsage, length_mask, log_spectral_distance, si_sdr
from l3se.training.task import StepOutput, Task, ValOutput


class CodecTask(Task):
    def __init__(
        self,
        codec: WavCodec,
        loss: CodecLossConfig | None = None,
        discriminator: Discriminator | None = None,
    ):
        super().__init__()
        self.codec = codec
        self.weights = loss or CodecLossConfig()
        self.mel_loss = MultiScaleMelLoss(
            self.weights.mel_n_mels, self.weights.mel_windows, codec.sample_rate
        )
        self.discriminator = discriminator
        self.usage = CodebookUsage(codec.cfg.n_codebooks, codec.cfg.codebook_size)

    def _reconstruct(self, batch: dict):
        wav, lengths = batch["clean"], batch["lengths"]
        out = self.codec(wav, lengths)
        # Padding is not signal: neither loss nor discriminator should see what the decoder
        # makes of it.
        return wav, out, length_mask(out.audio, lengths)

    def training_step(self, batch: dict, step: int) -> StepOutput:
        w = self.weights
        wav, out, recon = self._reconstruct(batch)
        mel = self.mel_loss(recon, wav)
        loss = w.mel * mel + w.commitment * out.commitment_loss + w.codebook * out.codebook_loss
        logs = {"mel": mel, "commitment": out.commitment_loss, "codebook": out.codebook_loss}
        cache = None
        if self.discriminator is not None:
            adv, fm = generator_loss(self.discriminator, recon, wav)
            loss = loss + w.adversarial * adv + w.feature_matching * fm
            logs.update(adversarial=adv, feature_matching=fm)
            cache = (recon.detach(), wav)
        logs["loss"] = loss
        self.usage.update(out.codes)
        return StepOutput(loss=loss, logs={k: v.detach() for k, v in logs.items()}, cache=cache)

    def discriminator_step(self, cache, step: int) -> StepOutput:
        fake, real = cache
        loss = discriminator_loss(self.discriminator, fake, real)
        return StepOutput(loss=loss, logs={"discriminator": loss.detach()})

    def validation_step(self, batch: dict) -> ValOutput:
        wav, out, recon = self._reconstruct(batch)
        metrics = {
            "mel": self.mel_loss(recon, wav),
            "si_sdr": si_sdr(recon, wav).mean(),
            "lsd": log_spectral_distance(recon, wav).mean(),
        }
        return ValOutput(metrics=metrics, audio={"clean": wav, "reconstruction": recon})

    def log_extras(self) -> dict[str, float]:
        extras = self.usage.compute()
        for i, weight in enumerate(self.codec.mixture.weights.tolist()):
            extras[f"mixture/layer_{i:02d}"] = weight
        return extras

    def export(self, path: Path) -> None:
        self.codec.save_pretrained(path)
