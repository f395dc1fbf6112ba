"""The two encoder heads over a WavLM layer mixture, shared by the teachers and the NI-Encoder.

    AcousticEncoder: [B, T50, H] -> ConvNeXt stack -> strided downsamplers -> [B, T12, D]
    SemanticEncoder: [B, T50, H] -> linear in -> pre-norm Transformer stack -> [B, T50, D]

WavCodec's encoder and the NI-Encoder's acoustic head are ``AcousticEncoder``s; WavS2T's encoder
and the NI-Encoder's semantic head are ``SemanticEncoder``s, so a student head loads its
teacher's weights as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from l3se.models.modules import Downsample
from l3se.models.ssl import valid_frames


@dataclass
class AcousticHeadConfig:
    dim: int = 1024
    intermediate_dim: int = 2048
    num_layers: int = 6
    # Each stage halves the frame rate: 2 stages, 50 -> 12.5 Hz.
    resample_stages: int = 2


@dataclass
class SemanticHeadConfig:
    dim: int = 1024
    ff_dim: int = 4096
    num_heads: int = 16
    num_layers: int = 6
    dropout: float = 0.1


class AcousticEncoder(nn.Module):
    """Mixed WavLM features [B, T50, H] -> latent [B, T50 / 2**stages, D] (T50 divisible)."""

    def __init__(self, input_dim: int, cfg: AcousticHeadConfig):
        super().__init__()
        from vocos.models import VocosBackbone

        self.backbone = VocosBackbone(
            input_channels=input_dim,
            dim=cfg.dim,
            intermediate_dim=cfg.intermediate_dim,
            num_layers=cfg.num_layers,
        )
        self.downsample = Downsample(cfg.dim, cfg.resample_stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x.transpose(1, 2))
        return self.downsample(x.transpose(1, 2)).transpose(1, 2)


class SemanticEncoder(nn.Module):
    """Mixed WavLM features [B, T50, H] (+ padding mask [B, T50], True = padded) -> [B, T50, D].

    No positional encoding: WavLM's features already carry position (its convolutional positional
    embedding and relative attention bias)."""

    def __init__(self, input_dim: int, cfg: SemanticHeadConfig):
        super().__init__()
        self.proj = nn.Linear(input_dim, cfg.dim)
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.dim,
            nhead=cfg.num_heads,
            dim_feedforward=cfg.ff_dim,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Pre-norm layers leave the residual stream unnormalised: a final LayerNorm gives the
        # distillation target and the LLM projection a stable scale.
        self.layers = nn.TransformerEncoder(
            layer, cfg.num_layers, norm=nn.LayerNorm(cfg.dim), enable_nested_tensor=False
        )

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(self.proj(x), src_key_padding_mask=padding_mask)


def frame_padding_mask(lengths: torch.Tensor | None, num_frames: int, hop: int) -> torch.Tensor | None:
    """Sample lengths [B] -> [B, num_frames] True where a frame of ``hop`` samples starts past the
    end of its item (the frames WavLM masks too); None when nothing is padded."""
    if lengths is None:
        return None
    frames = torch.arange(num_frames, device=lengths.device)
    mask = frames[None] >= valid_frames(lengths, hop)[:, None]
    return mask if bool(mask.any()) else None
