"""The DAC training objective for WavCodec (paper appendix A.1).

The multi-scale mel loss is ``dac.nn.loss.MelSpectrogramLoss`` with DAC's configuration, wrapped
for plain tensors. The least-squares GAN and feature-matching terms use the formulas of
``dac.nn.loss.GANLoss``; that class owns its discriminator and runs it twice per loss, so it is
not reused: here the discriminator stays a sibling module (stored once in checkpoints) and scores
fake and real audio in one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CodecLossConfig:
    # The seed text lost the paper's loss weights; these are DAC's published defaults
    # (descript-audio-codec conf/base.yml).
    mel: float = 15.0
    feature_matching: float = 2.0
    adversarial: float = 1.0
    commitment: float = 0.25
    codebook: float = 1.0
    mel_n_mels: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320])
    mel_windows: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])


class MultiScaleMelLoss(nn.Module):
    """L1 between log10 mel spectrograms at several resolutions: pred, target [B, S] -> scalar."""

    def __init__(self, n_mels: list[int], windows: list[int], sample_rate: int = 16000):
        super().__init__()
        from dac.nn.loss import MelSpectrogramLoss

        if len(n_mels) != len(windows):
            raise ValueError(f"{len(n_mels)} mel sizes for {len(windows)} window lengths")
        self.sample_rate = sample_rate
        # DAC's settings: magnitude (pow 1) mels, log term only, full band.
        self.loss = MelSpectrogramLoss(
            n_mels=list(n_mels),
            window_lengths=list(windows),
            mel_fmin=[0.0] * len(windows),
            mel_fmax=[None] * len(windows),
            pow=1.0,
            clamp_eps=1e-5,
            mag_weight=0.0,
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from audiotools import AudioSignal

        with torch.autocast(pred.device.type, enabled=False):
            return self.loss(
                AudioSignal(pred.float()[:, None], self.sample_rate),
                AudioSignal(target.float()[:, None], self.sample_rate),
            )


def split_scores(
    fmaps: list[list[torch.Tensor]], n_fake: int
) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Feature maps of a discriminator run on cat([fake, real]) -> (fake maps, real maps)."""
    fake = [[f[:n_fake] for f in maps] for maps in fmaps]
    real = [[f[n_fake:] for f in maps] for maps in fmaps]
    return fake, real


def discriminator_loss(disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of mean(D(fake)^2) + mean((1 - D(real))^2)."""
    d_fake, d_real = split_scores(disc(torch.cat([fake.detach(), real])), fake.shape[0])
    loss = fake.new_zeros(())
    for f, r in zip(d_fake, d_real):
        loss = loss + f[-1].square().mean() + (1 - r[-1]).square().mean()
    return loss


def generator_loss(
    disc: nn.Module, fake: torch.Tensor, real: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LSGAN generator loss sum mean((1 - D(fake))^2), feature matching: L1 between every
    intermediate map of D(fake) and D(real), summed)."""
    d_fake, d_real = split_scores(disc(torch.cat([fake, real])), fake.shape[0])
    adv = fake.new_zeros(())
    fm = fake.new_zeros(())
    for f, r in zip(d_fake, d_real):
        adv = adv + (1 - f[-1]).square().mean()
        for fj, rj in zip(f[:-1], r[:-1]):
            fm = fm + F.l1_loss(fj, rj.detach())
    return adv, fm
