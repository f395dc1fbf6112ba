"""Building blocks of the WavCodec encoder and decoder.

The ConvNeXt stacks are vocos' ``VocosBackbone`` (``vocos.modules.ConvNeXtBlock``), used as is.
vocos 0.1.0 has no ResNet/attention blocks, so the WavTokenizer-style ones (GroupNorm + swish
ResNet blocks, single-head self-attention, from VQGAN's ``taming`` code) live here, as do the
strided temporal resamplers. All blocks take and return channels-first [B, C, T] tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels), num_channels=channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """[B, C, T] -> [B, C, T]: two (GroupNorm, swish, conv k3) layers with a residual."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return x + h


class AttentionBlock(nn.Module):
    """[B, C, T] -> [B, C, T]: single-head self-attention over time with a residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, kernel_size=1)
        self.proj = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).transpose(1, 2).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(h.transpose(1, 2))


class PosNet(nn.Module):
    """WavTokenizer's block stack before the ConvNeXt layers: ResNet x2, attention, ResNet x2,
    GroupNorm. [B, C, T] -> [B, C, T]. Gives the decoder a global (attention) view that the
    ConvNeXt stack's 7-frame kernels lack."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.Sequential(
            ResnetBlock(channels, dropout),
            ResnetBlock(channels, dropout),
            AttentionBlock(channels),
            ResnetBlock(channels, dropout),
            ResnetBlock(channels, dropout),
            group_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _Resample(nn.Module):
    """``stages`` stride-2 layers of one kind with GELU between them."""

    def __init__(self, channels: int, stages: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(stages):
            if i:
                layers.append(nn.GELU())
            layers.append(self.layer(channels))
        self.layers = nn.Sequential(*layers)

    def layer(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Downsample(_Resample):
    """[B, C, T] -> [B, C, T / 2**stages] (T divisible): strided convs with GELU between."""

    def layer(self, channels: int) -> nn.Module:
        return nn.Conv1d(channels, channels, kernel_size=4, stride=2, padding=1)


class Upsample(_Resample):
    """[B, C, T] -> [B, C, T * 2**stages]: transposed strided convs with GELU between.

    A kernel-4 stride-2 transposed conv adds two taps to even outputs and two others to odd
    ones, a checkerboard that every output shares: at 12.5 Hz tokens, a comb at multiples of
    25 Hz. ``InterpUpsample`` has no such pattern."""

    def layer(self, channels: int) -> nn.Module:
        return nn.ConvTranspose1d(channels, channels, kernel_size=4, stride=2, padding=1)


class InterpUpsample(_Resample):
    """[B, C, T] -> [B, C, T * 2**stages]: per stage, linear interpolation to twice the rate
    then a kernel-3 conv, with GELU between stages."""

    def layer(self, channels: int) -> nn.Module:
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="linear", align_corners=False),
            nn.Conv1d(channels, channels, kernel_size=3, padding=1),
        )


UPSAMPLERS = {"transposed": Upsample, "interp": InterpUpsample}
