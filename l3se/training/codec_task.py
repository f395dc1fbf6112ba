"""The WavCodec stages, clean -> clean: codec-1 (generator only), codec-2 (+ discriminator) and
codec-3 (codec-2's objective plus ``CodecObjective``s that judge the output with a language
model, on the codec parts named in ``train_parts``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from l3se.models.codec import WavCodec
from l3se.models.codec_objectives import CodecObjective, CodecStep
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
    """``objectives``: codec-3's extra losses. ``train_parts``: the codec submodules that train
    (default: all but the frozen WavLM). ``generator_warmup``: steps at the start that train only
    the discriminator (a fresh one, next to a generator that is already trained)."""

    def __init__(
        self,
        codec: WavCodec,
        loss: CodecLossConfig | None = None,
        discriminator: Discriminator | None = None,
        objectives: Sequence[CodecObjective] = (),
        train_parts: Sequence[str] | None = None,
        generator_warmup: int = 0,
    ):
        super().__init__()
        self.codec = codec
        self.weights = loss or CodecLossConfig()
        self.mel_loss = MultiScaleMelLoss(
            self.weights.mel_n_mels, self.weights.mel_windows, codec.sample_rate
        )
        self.discriminator = discriminator
        self.objectives = nn.ModuleList(objectives)
        if generator_warmup and discriminator is None:
            raise ValueError("generator_warmup trains the discriminator alone: it needs one")
        self.generator_warmup = generator_warmup
        if train_parts is not None:
            freeze_codec_parts(codec, train_parts)
        self.usage = CodebookUsage(codec.cfg.n_codebooks, codec.cfg.codebook_size)
        # The step of the latest training batch: validation scores the objectives as they stand.
        self._step = 0

    def updates_generator(self, step: int) -> bool:
        return step >= self.generator_warmup

    def _reconstruct(self, batch: dict):
        wav, lengths = batch["clean"], batch["lengths"]
        out = self.codec(wav, lengths)
        # Padding is not signal: neither loss nor discriminator should see what the decoder
        # makes of it.
        return wav, out, length_mask(out.audio, lengths)

    def _objectives(self, batch: dict, wav, out, recon, step: int) -> dict[str, tuple]:
        """name -> (weighted loss, unweighted logs) of every extra objective."""
        if not self.objectives:
            return {}
        meta = batch["meta"]
        s = CodecStep(
            clean=wav, recon=recon, lengths=batch["lengths"], codes=out.codes,
            quantized=out.quantized, texts=[m.get("text") for m in meta],
            words=[m.get("words") for m in meta], step=step,
        )
        results = {}
        for objective in self.objectives:
            o = objective(s)
            results[objective.name] = (o.loss, o.logs)
        return results

    def training_step(self, batch: dict, step: int) -> StepOutput:
        self._step = step
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
        if self.updates_generator(step):
            for name, (extra, parts) in self._objectives(batch, wav, out, recon, step).items():
                loss = loss + extra
                logs.update({f"{name}/{k}": v for k, v in parts.items()})
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
        for name, (_, parts) in self._objectives(batch, wav, out, recon, self._step).items():
            metrics.update({f"{name}/{k}": v for k, v in parts.items()})
        return ValOutput(metrics=metrics, audio={"clean": wav, "reconstruction": recon})

    def log_extras(self) -> dict[str, float]:
        extras = self.usage.compute()
        for i, weight in enumerate(self.codec.mixture.weights.tolist()):
            extras[f"mixture/layer_{i:02d}"] = weight
        return extras

    def export(self, path: Path) -> None:
        self.codec.save_pretrained(path)


def freeze_codec_parts(codec: WavCodec, parts: Sequence[str]) -> None:
    """Train only the codec submodules named in ``parts`` (of ``mixture``, ``encoder``,
    ``quantizer``, ``decoder``); the WavLM stays frozen whatever is named."""
    known = [name for name, _ in codec.named_children() if name != "ssl"]
    unknown = sorted(set(parts) - set(known))
    if unknown:
        raise ValueError(f"train_parts: no codec part named {', '.join(unknown)}; "
                         f"choose from {', '.join(known)}")
    for name in known:
        getattr(codec, name).requires_grad_(name in parts)
