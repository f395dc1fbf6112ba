"""The Qwen3 decoder-only LLM used twice in L3-SE: frozen, as WavS2T's text decoder, and fine-tuned
over an audio vocabulary, as the enhancement LM.

At paper scale it is ``Qwen/Qwen3-0.6B`` from the Hugging Face hub. Tests and the offline
quickstart build the same ``transformers.Qwen3ForCausalLM`` from config numbers with random
weights (``pretrained: null``), so no download is needed to construct a model.
"""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

PAPER_QWEN3 = "Qwen/Qwen3-0.6B"

# The transformers releases whose internals l3se relies on: what WavLM's encoder layers return,
# Qwen3's per-layer attention-mask dicts, ``_attn_implementation``, ``DynamicCache(config=...)``,
# ``from_pretrained(dtype=...)``, and tied embeddings in a model built on the meta device (5.0
# leaves them untied, miscounting the launch check's parameters); a new major may change any.
TRANSFORMERS_MIN, TRANSFORMERS_BELOW = (5, 1), (6, 0)

# Qwen/Qwen3-0.6B's architecture, so that the paper model builds without the hub.
QWEN3_0_6B: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

# A few-megabyte Qwen3 for tests and CPU recipes (vocab_size is set by whoever builds it).
QWEN3_TINY: dict[str, Any] = {
    **QWEN3_0_6B,
    "vocab_size": 1024,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 8192,
    "bos_token_id": None,
    "eos_token_id": None,
}

PRESETS = {"0.6b": QWEN3_0_6B, "tiny": QWEN3_TINY}


@dataclass
class LLMConfig:
    # Hub name or local folder to load weights from; null builds ``arch`` with random weights.
    pretrained: str | None = PAPER_QWEN3
    # "0.6b", "tiny", or Qwen3Config fields; only used when ``pretrained`` is null.
    arch: str | dict = "0.6b"


def build_qwen3_config(arch: str | dict, **overrides):
    from transformers import Qwen3Config

    if isinstance(arch, str):
        if arch not in PRESETS:
            raise ValueError(f"unknown Qwen3 preset {arch!r}; choose from {sorted(PRESETS)}")
        arch = PRESETS[arch]
    arch = {**arch, **overrides}
    rope_theta = arch.pop("rope_theta", None)
    conf = Qwen3Config(**arch)
    if rope_theta is not None:
        conf.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
    return conf


def check_transformers() -> None:
    """Refuse, in one line, a transformers release outside the range l3se is built for: its
    internals would give wrong numbers rather than errors."""
    found = version("transformers")
    if not TRANSFORMERS_MIN <= tuple(int(p) for p in found.split(".")[:2]) < TRANSFORMERS_BELOW:
        low, high = (".".join(map(str, v)) for v in (TRANSFORMERS_MIN, TRANSFORMERS_BELOW))
        raise ImportError(f"l3se needs transformers >={low},<{high}; found {found}")


def build_qwen3(cfg: LLMConfig, **overrides):
    """``Qwen3ForCausalLM`` from the hub (``cfg.pretrained``) or from ``cfg.arch`` with random
    weights; ``overrides`` (e.g. ``vocab_size``) apply to a randomly built model only.

    Weights are fp32 either way: transformers would keep the checkpoint's bf16, and AdamW on bf16
    weights drops every update below about 2**-8 of a weight (most of them at lr 1e-4..1e-5).
    Training and inference get bf16 compute from autocast."""
    import torch
    from transformers import Qwen3ForCausalLM

    check_transformers()
    if cfg.pretrained:
        return Qwen3ForCausalLM.from_pretrained(cfg.pretrained, dtype=torch.float32)
    return Qwen3ForCausalLM(build_qwen3_config(cfg.arch, **overrides))


def qwen3_arch(model) -> dict:
    """Full config of a built model as plain data: rebuilds the architecture without the hub."""
    return json.loads(model.config.to_json_string(use_diff=False))


@functools.cache
def _cache_keyword() -> str:
    from transformers import Qwen3Model

    return "cache" if "cache" in inspect.signature(Qwen3Model.forward).parameters else "past_key_values"


def cache_kwargs(cache) -> dict:
    """Keyword passing a KV cache to a transformers model's forward: ``cache`` from
    transformers 5.2x on (which deprecates ``past_key_values``), ``past_key_values`` before."""
    return {_cache_keyword(): cache, "use_cache": True}
