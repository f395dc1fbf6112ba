"""The codec-2 discriminator: DAC's multi-period (MPD) + multi-band multi-scale STFT (MRD)
discriminators, used as is and wrapped so that they take plain [B, S] tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# DAC's frequency bands for the MRD, as fractions of the Nyquist range.
DAC_BANDS = [[0.0, 0.1], [0.1, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]]


@dataclass
class DiscriminatorConfig:
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512])
    bands: list[list[float]] = field(default_factory=lambda: [list(b) for b in DAC_BANDS])


class Discriminator(nn.Module):
    """wav [B, S] -> one list of feature maps per sub-discriminator; the last map of each list
    is its real/fake score map."""

    def __init__(self, cfg: DiscriminatorConfig | None = None, sample_rate: int = 16000):
        super().__init__()
        from dac.model.discriminator import Discriminator as DACDiscriminator

        cfg = cfg or DiscriminatorConfig()
        self.dac = DACDiscriminator(
            rates=[],
            periods=list(cfg.periods),
            fft_sizes=list(cfg.fft_sizes),
            sample_rate=sample_rate,
            bands=[tuple(b) for b in cfg.bands],
        )

    def forward(self, wav: torch.Tensor) -> list[list[torch.Tensor]]:
        # The MRD's STFT has no bf16 kernel, so the whole discriminator runs in fp32.
        with torch.autocast(wav.device.type, enabled=False):
            return self.dac(wav.float()[:, None])
