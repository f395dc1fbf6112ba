"""Constrained autoregressive decoding of flattened codec tokens from the SpeechLM.

``generate`` runs the prefix and bos through transformers' Qwen3 once, copies the keys and values
into per-layer buffers preallocated to the whole sequence, and then feeds one token per step
through ``StaticStep``: fixed shapes and addresses, the attention mask built once and unmasked
one position per step. Each token is scored against its own codebook's K head rows only, and
sampling picks every row of a step at once by Gumbel-max over noise drawn at the start.

A ``DecodeEngine`` holds what outlives one call: the CUDA graphs captured per batch shape (one
launch per token instead of some 30 kernel launches per layer, whose latency bounds a 0.6B
decoder at small batches) and the CPU thread count of the token loop. An ``Enhancer`` owns one;
``generate`` without one uses a fresh engine for the call. The CPU runs the step eagerly: a
``torch.compile`` per (batch, length) did not pay for itself when measured, and fused arithmetic
need not reproduce the pinned codes. benchmarks/bench_decode.py measures the decoders and the
thread counts on the machine at hand.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from l3se.config import ConfigError
from l3se.models.llm import cache_kwargs
from l3se.models.tokens import BOS

if TYPE_CHECKING:
    from l3se.models.lm import SpeechLM

# "0" (or false/no/off) turns the CUDA graphs off for every engine not told otherwise.
CUDA_GRAPHS_ENV = "L3SE_CUDA_GRAPHS"


@dataclass
class DecodeConfig:
    # "mbr" (minimum Bayes risk): the entry whose vector is nearest to the expectation of the
    # codebook's vectors under the LM's distribution (at ``temperature``), so that an uncertain
    # LM picks an entry near what its candidates have in common instead of one of them. A small
    # LM's argmax decodes below the codec's own quantization of the NI-Encoder output; see
    # docs/diagnosis.md for the measurements.
    strategy: Literal["greedy", "sample", "mbr"] = "greedy"
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
            (self.strategy in ("greedy", "sample", "mbr"), "strategy",
             "'greedy', 'sample' or 'mbr'"),
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


def gumbel_noise(
    generators: Sequence[torch.Generator] | None, token_counts: Sequence[int], steps: int,
    entries: int, device: torch.device,
) -> torch.Tensor:
    """Standard Gumbel draws [B, steps, entries], one draw per item: item b's first
    ``token_counts[b]`` steps from ``generators[b]`` (None: torch's global generator), the rest
    -inf (never picked; those frames are zeroed).

    Each item draws exactly its own tokens' noise, so its draws do not depend on the length of
    its batch (a CUDA generator's values depend on the size of the draw)."""
    noise = torch.zeros(len(token_counts), steps, entries, device=device)
    for b, count in enumerate(token_counts):
        g = None if generators is None else generators[b]
        noise[b, :count] = torch.rand(count, entries, generator=g, device=device)
    # -log(-log u), in place: B * Q*T12 * K floats are some 260 MB at batch 32 and 20 s chunks.
    # u in [0, 1); u = 0 gives -inf.
    return noise.log_().neg_().log_().neg_()


def sampling_noise(
    cfg: DecodeConfig, seeds: Sequence[int] | None, token_counts: Sequence[int], steps: int,
    entries: int, device: torch.device,
) -> torch.Tensor | None:
    """The Gumbel draws [B, steps, entries] of a sampling ``cfg`` (None when greedy): item b's
    from a generator seeded with ``seeds[b]``, else ``cfg.seed``, else torch's global one."""
    if cfg.strategy != "sample":
        return None
    b = len(token_counts)
    if seeds is None and cfg.seed is not None:
        seeds = [cfg.seed] * b
    if seeds is not None and len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for a batch of {b}")
    generators = None
    if seeds is not None:
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    return gumbel_noise(generators, token_counts, steps, entries, device)


def pick(
    logits: torch.Tensor, cfg: DecodeConfig, noise: torch.Tensor | None = None,
    entries: torch.Tensor | None = None,
) -> torch.Tensor:
    """logits [B, K] -> chosen entries [B]: greedy; a temperature / top-k / top-p sample by
    Gumbel-max, argmax(filtered logits / temperature + noise), with ``noise`` [B, K] standard
    Gumbel draws (``gumbel_noise``): a sample of softmax(filtered logits / temperature), every
    row in one launch; or "mbr", the entry of ``entries`` [K, D] (the codebook's vectors) nearest
    to their mean under softmax(logits / temperature)."""
    if cfg.strategy == "greedy":
        return logits.argmax(-1)
    if cfg.strategy == "mbr":
        if entries is None:
            raise ValueError("mbr decoding needs the codebook's vectors")
        mean = (logits.float() / cfg.temperature).softmax(-1) @ entries  # [B, D]
        return ((entries * entries).sum(-1) - 2 * mean @ entries.T).argmin(-1)
    if noise is None:
        raise ValueError("sampling needs its Gumbel noise")
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
    return (logits + noise).argmax(-1)


@torch.inference_mode()
def generate(
    lm: SpeechLM, prefix: torch.Tensor, frame_lengths: torch.Tensor, cfg: DecodeConfig,
    seeds: Sequence[int] | None = None, engine: DecodeEngine | None = None,
    entries: torch.Tensor | None = None,
) -> torch.Tensor:
    """prefix [B, T12, H] (right-padded), frame_lengths [B] -> codes [B, Q, T12].

    Generates exactly Q * T12 tokens per item, each from the K entries of its codebook only
    (the head is evaluated on that slice alone). The prefix pass runs through transformers; the
    tokens then run through ``engine``'s ``StaticStep`` (None: a fresh ``DecodeEngine()``),
    replayed as a CUDA graph on CUDA. Frames past an item's length are 0. Items are decoded as if
    alone: prefixes are left-padded, the padding is masked and position ids count from each
    item's first real frame. Sampling draws item b from its own generator seeded with
    ``seeds[b]`` (default: ``cfg.seed`` for every item; neither: torch's global generator), so an
    item's codes do not depend on what it is batched with. "mbr" needs ``entries`` [Q, K, D],
    the codec's codebook vectors (``WavCodec.entry_vectors``).
    """
    from transformers import DynamicCache

    tokens = lm.tokens
    b, t, _ = prefix.shape
    q, n = tokens.n_codebooks, tokens.n_codebooks * t
    device = prefix.device
    noise = sampling_noise(cfg, seeds, (q * frame_lengths).tolist(), n, tokens.codebook_size,
                           device)

    padded, valid = left_pad(prefix, frame_lengths)
    full = torch.cat([valid, valid.new_ones(b, 1 + n)], 1)  # [B, T12 + 1 + Q*T12]
    # The last token is never fed back: the model sees one position less.
    mask, positions = full[:, :-1], lm.position_ids(full)[:, :-1]
    heads = lm.codebook_head()  # [Q, K, H]
    offsets = tokens.n_specials + tokens.codebook_size * torch.arange(q, device=device)
    out = torch.zeros(b, n, dtype=torch.long, device=device)

    bos = lm.frame_inputs(lm.embed(torch.full((b, 1), BOS, device=device)).to(padded.dtype), prefix)
    x = torch.cat([padded, bos], 1)
    start = t + 1
    prefill = DynamicCache(config=lm.llm.config)
    hidden = lm.body(
        inputs_embeds=x, attention_mask=mask[:, :start].long(),
        position_ids=positions[:, :start], **cache_kwargs(prefill),
    ).last_hidden_state[:, -1]
    with (engine or DecodeEngine()).step(lm, prefill, mask, positions, x) as step:
        for i in range(n):
            c = i % q
            entry = pick(hidden @ heads[c].T, cfg, None if noise is None else noise[:, i],
                         None if entries is None else entries[c])
            out[:, i] = entry
            if i < n - 1:
                token = lm.frame_inputs(lm.embed((entry + offsets[c])[:, None]), prefix, i + 1)
                hidden = step(token, start + i)
    codes = out.view(b, t, q).transpose(1, 2)
    frames = torch.arange(t, device=device)[None, None] < frame_lengths[:, None, None]
    return codes * frames


def cuda_graphs_default() -> bool:
    """Whether engines capture CUDA graphs unless told: yes, unless ``L3SE_CUDA_GRAPHS`` is 0,
    false, no or off."""
    return os.environ.get(CUDA_GRAPHS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class DecodeEngine:
    """The decoding state that outlives a ``generate`` call: the CUDA graphs of the most
    recently used batch shapes, and the CPU thread count of the token loop.

    A graph reads the LM's weights and writes its K/V buffers at the addresses captured, so a
    graph is replayed only for the same device, attention implementation, dtypes, autocast,
    batch shape and weight storage (a moved or reloaded model gets a new one), and one call at a
    time (a lock: two threads replaying one graph would share its buffers). ``free`` releases the
    graphs and their buffers; the next call captures again.

    ``cuda_graphs``: None follows ``L3SE_CUDA_GRAPHS`` (default on); off, CUDA runs the step
    eagerly. ``threads``: torch CPU threads while the CPU runs the token loop (None: unchanged):
    a chain of small steps gains little from more threads and loses to their synchronisation on a
    busy host (benchmarks/bench_decode.py --threads), and a fixed count keeps the codes the same
    on any host. The rest of the enhancer (WavLM, codec) keeps the process's count.
    """

    # Each graph holds its K/V buffers (for the 0.6B LM at batch 32 and 20 s chunks some 12 GB):
    # few, but two, so that a long input's full-length chunks and its last one both stay.
    KEEP_GRAPHS = 2

    def __init__(self, cuda_graphs: bool | None = None, threads: int | None = None):
        self.cuda_graphs = cuda_graphs_default() if cuda_graphs is None else cuda_graphs
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self._graphs: OrderedDict[tuple, StaticStep] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def step(self, lm: SpeechLM, prefill, mask: torch.Tensor, positions: torch.Tensor,
             like: torch.Tensor) -> Iterator[StaticStep]:
        """A step loaded with ``prefill``'s keys and values, for the ``with`` block only: on CUDA
        (graphs on) this shape's graph, captured now unless captured before for this model."""
        if like.device.type != "cuda" or not self.cuda_graphs:
            threads = self.threads if like.device.type == "cpu" else None
            with cpu_threads(threads):
                yield StaticStep(lm, prefill, mask, like).load(prefill, mask, positions)
            return
        key = graph_key(lm, prefill, mask, like)
        with self._lock:
            step = self._graphs.pop(key, None)
            if step is None:
                while len(self._graphs) >= self.KEEP_GRAPHS:
                    self._graphs.popitem(last=False)
                step = StaticStep(lm, prefill, mask, like)
                step.capture()  # before ``load``: its warm-up scribbles on the buffers
            self._graphs[key] = step  # last: the most recently used
            yield step.load(prefill, mask, positions)

    @property
    def graphs(self) -> int:
        """CUDA graphs held."""
        return len(self._graphs)

    def free(self) -> None:
        """Release the CUDA graphs and their buffers."""
        with self._lock:
            self._graphs.clear()


def graph_key(lm: SpeechLM, prefill, mask: torch.Tensor, like: torch.Tensor) -> tuple:
    """What a captured step depends on besides the values in its buffers: replaying it for
    another key would read or write memory that is not this call's."""
    first = prefill.layers[0]
    body = lm.body
    weights = tuple((w.data_ptr(), w.dtype) for w in itertools.chain(body.parameters(),
                                                                      body.buffers()))
    device = like.device.type
    return (like.device, lm.llm.config._attn_implementation, tuple(mask.shape), like.dtype,
            first.keys.dtype, first.values.dtype, torch.is_autocast_enabled(device),
            torch.get_autocast_dtype(device), weights)


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` inside the block (None: unchanged). Concurrent
    blocks share the first one's setting; the last to leave restores the count from before, so
    that overlapping calls cannot leave the process at the loop's count."""
    global _threads_users, _threads_before
    if threads is None:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)


class StaticStep:
    """The one-token decoding step over per-layer K/V buffers preallocated to the whole
    sequence. Every tensor it touches has a fixed shape and address: the attention mask covers
    the whole length with the positions not yet written hidden, and per step only the input
    embedding and the write index change (the mask and the position ids follow the index on
    the device). A CUDA graph of it is therefore valid for every call of its batch shape
    (``DecodeEngine``); the CPU runs the same step eagerly.

    The Qwen3 layers are called directly, with this object as their cache (``update``): their
    numerics are transformers' own, without the model's per-call mask building and wrappers."""

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

    def load(self, prefill, mask: torch.Tensor, positions: torch.Tensor) -> StaticStep:
        """Reset the buffers to this call: ``prefill``'s keys and values, ``mask`` [B, L] with
        the positions after the prefill hidden, and ``positions`` [B, L]."""
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
        """Record ``forward`` as a CUDA graph in its own memory pool (released with this step)."""
        # Autocast's weight cache is freed on leaving autocast, under a graph still reading it:
        # warm-up and capture both cast inside (the warm-up must run what the capture records).
        amp = torch.autocast("cuda", torch.get_autocast_dtype("cuda"),
                             enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
        with torch.cuda.device(self.x.device):
            # Warm-up on a side stream, as torch.cuda.graphs asks, so that lazy initialisation
            # (cuBLAS workspaces, kernel choices) stays out of the graph.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), amp:
                self.forward()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: another thread (a data loader's pinning thread, another enhancer)
            # may keep calling CUDA during the capture.
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"), amp:
                self.hidden = self.forward()

    def __call__(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Embedding [B, 1, H] of the token at sequence ``index`` -> next hidden state [B, H]
        (on CUDA graphs: the graph's output buffer, overwritten by the next call)."""
        self.x.copy_(x)
        self.index.fill_(index)
        if self.graph is None:
            return self.forward()
        self.graph.replay()
        return self.hidden
