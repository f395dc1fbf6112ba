"""The WavCodec stages, clean -> clean: codec-1 (generator only), codec-2 (+ discriminator) and
codec-3 (codec-2's objective plus ``CodecObjective``s that judge the output with a language
model, on the codec parts named in ``train_parts``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from l3se.models.codec import WavCodec
from l3se.models.codec_objectives import CodecObjective, CodecStep, ObjectiveOutput
from l3se.models.discriminators import Discriminator
from l3se.models.frozen import freeze
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
    the discriminator (a fresh one, next to a generator that is already trained).
    ``dead_code_frames``: restart a codebook entry that this many consecutive frames left unpicked
    (0: never)."""

    def __init__(
        self,
        codec: WavCodec,
        loss: CodecLossConfig | None = None,
        discriminator: Discriminator | None = None,
        objectives: Sequence[CodecObjective] = (),
        train_parts: Sequence[str] | None = None,
        generator_warmup: int = 0,
        dead_code_frames: int = 0,
    ):
        super().__init__()
        self.codec = codec
        codec.dead_code_frames = dead_code_frames
        self.weights = loss or CodecLossConfig()
        self.mel_loss = MultiScaleMelLoss(
            self.weights.mel_n_mels, self.weights.mel_windows, codec.sample_rate
        )
        self.discriminator = discriminator
        # By name, so that a config names an objective's parameters as
        # "objectives.<name>.<parameter>" (optim.groups) whatever the others are.
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives {names}: each name once")
        self.objectives = nn.ModuleDict({o.name: o for o in objectives})
        if generator_warmup and discriminator is None:
            raise ValueError("generator_warmup trains the discriminator alone: it needs one")
        self.generator_warmup = generator_warmup
        if train_parts is not None:
            freeze_codec_parts(codec, train_parts)
        self.usage = CodebookUsage(codec.cfg.n_codebooks, codec.cfg.codebook_size)
        # The step of the latest training batch: validation scores the objectives as they stand.
        self._step = 0

    def _reconstruct(self, batch: dict):
        wav, lengths = batch["clean"], batch["lengths"]
        out = self.codec(wav, lengths)
        # Padding is not signal: neither loss nor discriminator should see what the decoder
        # makes of it.
        return wav, out, length_mask(out.audio, lengths)

    def _objectives(self, batch: dict, wav, out, recon, step: int) -> dict[str, ObjectiveOutput]:
        """name -> output of every extra objective."""
        if not self.objectives:
            return {}
        meta = batch["meta"]
        s = CodecStep(
            clean=wav, recon=recon, lengths=batch["lengths"], codes=out.codes,
            quantized=out.quantized, texts=[m.get("text") for m in meta],
            words=[m.get("words") for m in meta], step=step, clips=clip_keys(batch),
        )
        return {name: objective(s) for name, objective in self.objectives.items()}

    def training_step(self, batch: dict, step: int) -> StepOutput:
        self._step = step
        w = self.weights
        wav, out, recon = self._reconstruct(batch)
        mel = self.mel_loss(recon, wav)
        loss = w.mel * mel + w.commitment * out.commitment_loss + w.codebook * out.codebook_loss
        logs = {"mel": mel, "commitment": out.commitment_loss, "codebook": out.codebook_loss}
        counts = {}
        cache = None if self.discriminator is None else (recon.detach(), wav)
        # During the discriminator-only warm-up nothing would receive these terms' gradients.
        if self.updates_generator(step):
            if self.discriminator is not None:
                adv, fm = generator_loss(self.discriminator, recon, wav)
                loss = loss + w.adversarial * adv + w.feature_matching * fm
                logs.update(adversarial=adv, feature_matching=fm)
            for name, o in self._objectives(batch, wav, out, recon, step).items():
                loss = loss + o.loss
                logs.update({f"{name}/{k}": v for k, v in o.logs.items()})
                counts.update({f"{name}/{k}": v for k, v in o.counts.items()})
        logs["loss"] = loss
        self.usage.update(out.codes)
        return StepOutput(loss=loss, logs={k: v.detach() for k, v in logs.items()},
                          counts=counts, cache=cache)

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
        for name, o in self._objectives(batch, wav, out, recon, self._step).items():
            metrics.update({f"{name}/{k}": v for k, v in o.logs.items()})
        return ValOutput(metrics=metrics, audio={"clean": wav, "reconstruction": recon})

    def log_extras(self) -> dict[str, float]:
        extras = self.usage.compute()
        for i, weight in enumerate(self.codec.mixture.weights.tolist()):
            extras[f"mixture/layer_{i:02d}"] = weight
        return extras

    def export(self, path: Path) -> None:
        self.codec.save_pretrained(path)
        for objective in self.objectives.values():
            objective.export(Path(path))


def clip_keys(batch: dict) -> list[str | None]:
    """Each item's identity: the utterance, where its clip starts and how long it is."""
    lengths = batch["lengths"].tolist()
    return [f"{m['id']}@{m.get('offset', 0.0):.4f}+{n}" if m.get("id") is not None else None
            for m, n in zip(batch["meta"], lengths)]


def freeze_codec_parts(codec: WavCodec, parts: Sequence[str]) -> None:
    """Train only the codec submodules named in ``parts`` (of ``mixture``, ``encoder``,
    ``quantizer``, ``decoder``); the WavLM stays frozen whatever is named."""
    known = [name for name, _ in codec.named_children() if name != "ssl"]
    unknown = sorted(set(parts) - set(known))
    if unknown:
        raise ValueError(f"train_parts: no codec part named {', '.join(unknown)}; "
                         f"choose from {', '.join(known)}")
    for name in known:
        if name not in parts:
            freeze(getattr(codec, name))
