"""Constrained autoregressive decoding of flattened codec tokens from the SpeechLM.

``generate`` runs the prefix and bos through transformers' Qwen3 once, copies the keys and values
into per-layer buffers preallocated to the whole sequence, and then feeds one token per step
through ``StaticStep``: fixed shapes and addresses, the attention mask built once and unmasked
one position per step. Each token is scored against its own codebook's K head rows only.

Defaults per device (benchmarks/bench_decode.py; numbers from a shared 2-core CPU):

- CPU: the step eagerly, 1 torch thread (``l3se enhance --threads``'s default): 2 threads
  decoded 7-14x slower than 1. ``torch.compile`` of the step took 42-46 s per (batch, length)
  and then decoded 1.6x faster with the tiny LM, no faster with a 29M-parameter one (matrix
  products dominate there); a compile per chunk length does not pay for itself, and fused
  arithmetic need not reproduce the pinned codes, so it is not used.
- CUDA: the step is captured once per (batch, length) as a CUDA graph and replayed, one launch
  per token instead of some 30 kernel launches per layer, whose launch latency bounds a 0.6B
  decoder at small batches. Not yet run on a GPU.
"""

from __future__ import annotations

import weakref
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
    (the head is evaluated on that slice alone). The prefix pass runs through transformers; the
    tokens then run through ``StaticStep``, replayed as a CUDA graph on CUDA. Frames past an
    item's length are 0. Items are decoded as if alone: prefixes are left-padded, the padding is
    masked and position ids count from each item's first real frame. Sampling draws item b from
    its own generator seeded with ``seeds[b]`` (default: ``cfg.seed`` for every item; neither:
    torch's global generator), so an item's codes do not depend on what it is batched with.
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
    full = torch.cat([valid, valid.new_ones(b, 1 + n)], 1)  # [B, T12 + 1 + Q*T12]
    # The last token is never fed back: the model sees one position less.
    mask, positions = full[:, :-1], lm.position_ids(full)[:, :-1]
    heads = lm.codebook_head()  # [Q, K, H]
    offsets = tokens.n_specials + tokens.codebook_size * torch.arange(q, device=device)
    out = torch.zeros(b, n, dtype=torch.long, device=device)

    bos = lm.embed(torch.full((b, 1), BOS, device=device))
    x = torch.cat([padded, bos.to(padded.dtype)], 1)
    start = t + 1
    prefill = DynamicCache(config=lm.llm.config)
    hidden = lm.body(
        inputs_embeds=x, attention_mask=mask[:, :start].long(),
        position_ids=positions[:, :start], **cache_kwargs(prefill),
    ).last_hidden_state[:, -1]
    step = StaticStep.get(lm, prefill, mask, positions, x)
    for i in range(n):
        c = i % q
        entry = pick(hidden @ heads[c].T, cfg, generators)
        out[:, i] = entry
        if i < n - 1:
            hidden = step(lm.embed((entry + offsets[c])[:, None]), start + i)
    codes = out.view(b, t, q).transpose(1, 2)
    frames = torch.arange(t, device=device)[None, None] < frame_lengths[:, None, None]
    return codes * frames


class StaticStep:
    """The one-token decoding step over per-layer K/V buffers preallocated to the whole
    sequence. Every tensor it touches has a fixed shape and address: the attention mask covers
    the whole length with the positions not yet written hidden, and per step only the input
    embedding and the write index change (the mask and the position ids follow the index on
    the device). On CUDA the step is therefore captured once as a graph per (batch, length)
    and replayed; the CPU runs the same step eagerly.

    The Qwen3 layers are called directly, with this object as their cache (``update``): their
    numerics are transformers' own, without the model's per-call mask building and wrappers."""

    # The most recently used CUDA graphs of each model, by shape: a long input's full-length
    # chunks share one. Few, as each holds its K/V buffers (for the 0.6B LM at batch 32 and 20 s
    # chunks some 12 GB).
    _graphs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    KEEP_GRAPHS = 2

    def __init__(self, lm: SpeechLM, prefill, mask: torch.Tensor, like: torch.Tensor):
        conf = lm.llm.config
        impl = conf._attn_implementation
        if impl not in ("sdpa", "eager") or set(conf.layer_types) != {"full_attention"}:
            raise ValueError(f"decoding supports sdpa and eager full attention, not {impl!r}")
        self.body = lm.body
        b, length = mask.shape
        # Keys and values can differ in dtype (under autocast the keys leave an fp32 norm).
        keys, values = prefill.layers[0].keys, prefill.layers[0].values
        shape = (b, keys.shape[1], length, keys.shape[3])
        self.keys = [keys.new_zeros(shape) for _ in self.body.layers]
        self.values = [values.new_zeros(shape) for _ in self.body.layers]
        self.x = like.new_zeros(b, 1, like.shape[-1])
        self.index = torch.zeros(1, dtype=torch.long, device=like.device)
        self.positions = torch.zeros(b, length, dtype=torch.long, device=like.device)
        # sdpa takes a boolean mask (True: attend), eager an additive one (0: attend).
        self.visible = True if impl == "sdpa" else 0.0
        self.mask = like.new_zeros(b, 1, 1, length, dtype=torch.bool if impl == "sdpa" else None)
        self.graph = None

    @classmethod
    def get(cls, lm: SpeechLM, prefill, mask: torch.Tensor, positions: torch.Tensor,
            like: torch.Tensor) -> StaticStep:
        """A step loaded with ``prefill``'s keys and values: on CUDA the graph of this shape
        captured earlier if any, else a new one."""
        if like.device.type != "cuda":
            return cls(lm, prefill, mask, like).load(prefill, mask, positions)
        first = prefill.layers[0]
        shape = (*mask.shape, like.dtype, first.keys.dtype, first.values.dtype,
                 torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        graphs = cls._graphs.setdefault(lm, {})
        step = graphs.pop(shape, None)
        if step is None:
            if len(graphs) >= cls.KEEP_GRAPHS:
                graphs.pop(next(iter(graphs)))
            step = cls(lm, prefill, mask, like)
            step.capture()  # before ``load``: its warm-up scribbles on the buffers
        graphs[shape] = step  # last: the most recently used
        return step.load(prefill, mask, positions)

    def load(self, prefill, mask: torch.Tensor, positions: torch.Tensor) -> StaticStep:
        start = prefill.get_seq_length()
        for layer, k, v in zip(prefill.layers, self.keys, self.values):
            k[:, :, :start].copy_(layer.keys)
            v[:, :, :start].copy_(layer.values)
        visible = mask.clone()
        visible[:, start:] = False
        if self.mask.dtype == torch.bool:
            self.mask.copy_(visible[:, None, None])
        else:
            self.mask.copy_(torch.zeros_like(self.mask).masked_fill(
                ~visible[:, None, None], torch.finfo(self.mask.dtype).min))
        self.positions.copy_(positions)
        return self

    def update(self, key: torch.Tensor, value: torch.Tensor, layer: int, *args, **kwargs):
        """The attention layers' cache write: this step's key and value at ``index``."""
        self.keys[layer].index_copy_(2, self.index, key)
        self.values[layer].index_copy_(2, self.index, value)
        return self.keys[layer], self.values[layer]

    def forward(self) -> torch.Tensor:
        self.mask.index_fill_(-1, self.index, self.visible)
        x = self.x
        rotary = self.body.rotary_emb(x, self.positions.index_select(1, self.index))
        for layer in self.body.layers:
            x = layer(x, attention_mask=self.mask, position_embeddings=rotary, **cache_kwargs(self))
        return self.body.norm(x)[:, -1]

    def capture(self) -> None:
        with torch.cuda.device(self.x.device):
            # Warm-up on a side stream, as torch.cuda.graphs asks, so that lazy initialisation
            # (cuBLAS workspaces, kernel choices) stays out of the graph.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.forward()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            # Autocast's weight cache is freed on leaving autocast, under a graph still reading
            # it. thread_local: a data loader's pinning thread (training's validation) may keep
            # calling CUDA during the capture.
            amp = torch.autocast("cuda", torch.get_autocast_dtype("cuda"),
                                 enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"), amp:
                self.hidden = self.forward()

    def __call__(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Embedding [B, 1, H] of the token at sequence ``index`` -> next hidden state [B, H]."""
        self.x.copy_(x)
        self.index.fill_(index)
        if self.graph is None:
            return self.forward()
        self.graph.replay()
        return self.hidden
