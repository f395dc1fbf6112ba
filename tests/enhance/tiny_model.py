"""A random-init tiny enhancer model directory (all three parts), for tests of the enhancer, the
``l3se enhance`` command and the app. Builds in about a second and needs no hub."""

from __future__ import annotations

from pathlib import Path

import torch

from l3se.enhancer import EnhancerConfig, save_enhancer
from l3se.models.codec import WavCodec
from l3se.models.heads import AcousticHeadConfig, SemanticHeadConfig
from l3se.models.llm import QWEN3_TINY, LLMConfig
from l3se.models.lm import SpeechLM, SpeechLMConfig
from l3se.models.ni_encoder import NIEncoder, NIEncoderConfig
from l3se.models.ssl import SSLConfig
from tests.models.tiny import tiny_codec_config

DIM = 32
TINY_LLM = {**QWEN3_TINY, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 32}


def make_tiny_model_dir(path: str | Path, seed: int = 0, **enhancer_overrides) -> Path:
    """Write a model directory loadable with ``Enhancer.from_pretrained(path)``; keyword
    arguments set ``EnhancerConfig`` fields (e.g. chunk_seconds=1.0)."""
    torch.manual_seed(seed)
    codec = WavCodec(tiny_codec_config())
    ni = NIEncoder(NIEncoderConfig(
        ssl=SSLConfig(pretrained=None, arch="tiny", frozen=False),
        acoustic=AcousticHeadConfig(dim=DIM, intermediate_dim=2 * DIM, num_layers=1),
        semantic=SemanticHeadConfig(dim=DIM, ff_dim=2 * DIM, num_heads=2, num_layers=1,
                                    dropout=0.0),
    ))
    lm = SpeechLM(SpeechLMConfig(
        llm=LLMConfig(pretrained=None, arch=TINY_LLM), acoustic_dim=DIM, semantic_dim=DIM,
        adapter_hidden=2 * DIM, n_codebooks=codec.cfg.n_codebooks,
        codebook_size=codec.cfg.codebook_size,
    ))
    return save_enhancer(path, ni, lm, codec, EnhancerConfig(**enhancer_overrides))
