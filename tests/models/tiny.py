"""Tiny random-init configurations shared by the model and training tests."""

from __future__ import annotations

from l3se.models.codec import WavCodecConfig
from l3se.models.ssl import SSLConfig


def tiny_codec_config(**overrides) -> WavCodecConfig:
    cfg = dict(
        ssl=SSLConfig(pretrained=None, arch="tiny"),
        dim=32,
        intermediate_dim=64,
        encoder_layers=1,
        decoder_layers=2,
        codebook_size=64,
        dropout=0.0,
    )
    cfg.update(overrides)
    return WavCodecConfig(**cfg)
