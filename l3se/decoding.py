"""Constrained autoregressive decoding of flattened codec tokens from the SpeechLM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from l3se.config import ConfigError
from l3se.models.llm import cache_kwargs
from l3se.models.tokens import BOS

if TYPE_CHECKING:
    from l3se.models.lm import SpeechLM


@dataclass
class DecodeConfig:
    strategy: Literal["greedy", "sample"] = "greedy"
    temperature: float = 1.0
    # 0: no top-k filtering.
    top_k: int = 0
    # 1.0: no nucleus filtering.
    top_p: float = 1.0
    # Base seed of sampling; null: nondeterministic. Each item samples from its own generator
    # (the enhancer seeds it from this and the item's audio), so that a weakly conditioned LM
    # does not give every file the same draws, and an output does not depend on its batch.
    seed: int | None = 0

    def __post_init__(self):
        # Every way in (model directory, command line, app, code) is checked here, once.
        problems = [
            (self.strategy in ("greedy", "sample"), "strategy", "'greedy' or 'sample'"),
            (self.temperature > 0, "temperature", "above 0"),
            (self.top_k >= 0, "top_k", "0 (no filtering) or more"),
            (0 < self.top_p <= 1, "top_p", "in (0, 1] (1: no filtering)"),
        ]
        for ok, name, need in problems:
            if not ok:
                raise ConfigError(f"{name} must be {need}, got {getattr(self, name)!r}")


def left_pad(prefix: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prefix [B, T, H] -> (left-padded prefix [B, T, H], valid mask [B, T]), so
    that every item's last prefix frame sits at the same step and all start generating together."""
    t = prefix.shape[1]
    steps = torch.arange(t, device=prefix.device)
    shift = (t - frame_lengths)[:, None]
    source = (steps[None] - shift).clamp_min(0)  # [B, T]
    valid = steps[None] >= shift
    padded = prefix.gather(1, source[..., None].expand_as(prefix)) * valid[..., None]
    return padded, valid


def pick(
    logits: torch.Tensor, cfg: DecodeConfig, generators: Sequence[torch.Generator] | None
) -> torch.Tensor:
    """logits [B, K] -> chosen entries [B] (greedy, or temperature / top-k / top-p sampling);
    row b draws from ``generators[b]`` (None: torch's global generator)."""
    if cfg.strategy == "greedy":
        return logits.argmax(-1)
    logits = logits.float() / cfg.temperature
    if 0 < cfg.top_k < logits.shape[-1]:
        kth = logits.topk(cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Keep the smallest prefix of the ranking whose mass reaches top_p (the top entry always).
        drop = probs.cumsum(-1) - probs >= cfg.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])


@torch.inference_mode()
def generate(
    lm: SpeechLM, prefix: torch.Tensor, frame_lengths: torch.Tensor, cfg: DecodeConfig,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """prefix [B, T12, H] (right-padded), frame_lengths [B] -> codes [B, Q, T12].

    Generates exactly Q * T12 tokens per item, each from the K entries of its codebook only
    (the head is evaluated on that slice alone), with a KV cache. Frames past an item's length
    are 0. Items are decoded as if alone: prefixes are left-padded, the padding is masked and
    position ids count from each item's first real frame. Sampling draws item b from its own
    generator seeded with ``seeds[b]`` (default: ``cfg.seed`` for every item; neither: torch's
    global generator), so an item's codes do not depend on what it is batched with.
    """
    from transformers import DynamicCache

    tokens = lm.tokens
    b, t, _ = prefix.shape
    q, n = tokens.n_codebooks, tokens.n_codebooks * t
    device = prefix.device
    if seeds is None and cfg.seed is not None:
        seeds = [cfg.seed] * b
    if seeds is not None and len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for a batch of {b}")
    generators = None
    if cfg.strategy == "sample" and seeds is not None:
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    padded, valid = left_pad(prefix, frame_lengths)
    mask = torch.cat([valid, valid.new_ones(b, 1 + n)], 1).long()  # [B, T + 1 + Q*T]
    positions = lm.position_ids(mask)
    heads = lm.codebook_head()  # [Q, K, H]
    offsets = tokens.n_specials + tokens.codebook_size * torch.arange(q, device=device)
    out = torch.zeros(b, n, dtype=torch.long, device=device)

    bos = lm.embed(torch.full((b, 1), BOS, device=device))
    x = torch.cat([padded, bos.to(padded.dtype)], 1)
    cache = DynamicCache(config=lm.llm.config)
    start = t + 1
    hidden = lm.body(
        inputs_embeds=x, attention_mask=mask[:, :start], position_ids=positions[:, :start],
        **cache_kwargs(cache),
    ).last_hidden_state[:, -1]
    step_mask = _step_mask(lm, mask, prefix.dtype)
    for i in range(n):
        c = i % q
        entry = pick(hidden @ heads[c].T, cfg, generators)
        out[:, i] = entry
        if i == n - 1:
            break
        end = start + i + 1
        hidden = lm.body(
            inputs_embeds=lm.embed((entry + offsets[c])[:, None]).to(x.dtype),
            attention_mask=step_mask(end), position_ids=positions[:, end - 1 : end],
            **cache_kwargs(cache),
        ).last_hidden_state[:, -1]
    codes = out.view(b, t, q).transpose(1, 2)
    frames = torch.arange(t, device=device)[None, None] < frame_lengths[:, None, None]
    return codes * frames


def _step_mask(lm: SpeechLM, mask: torch.Tensor, dtype: torch.dtype):
    """end -> the attention mask of the one-token step that makes the sequence ``end`` long.

    For sdpa and eager attention the per-layer mask is built once and sliced: transformers would
    otherwise rebuild it from the 2D mask at every step, a sixth of a small model's step time."""
    conf = lm.llm.config
    impl = conf._attn_implementation
    if impl not in ("sdpa", "eager") or set(conf.layer_types) != {"full_attention"}:
        return lambda end: mask[:, :end]
    if impl == "sdpa" and bool(mask.all()):
        # No padding: a single query attends to the whole cache, no mask needed.
        return lambda end: {"full_attention": None}
    keep = mask.bool()[:, None, None, :]  # [B, 1, 1, L]
    if impl == "eager":
        keep = torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(
            ~keep, torch.finfo(dtype).min
        )
    return lambda end: {"full_attention": keep[..., :end]}
