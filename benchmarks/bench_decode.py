"""Decoding speed of the SpeechLM, greedy, on random-init models, one row per decoder:

    per-token  transformers' model called per token with a growing DynamicCache, the loop
               ``generate`` replaced (``tests.models.test_decode_engine.reference_generate``;
               the replaced loop also built its attention masks once, 0-20% faster than this)
    engine     ``l3se.decoding.generate``: static K/V buffers, CUDA graphs on CUDA
    hf         transformers' ``generate``, with a LogitsProcessor masking every id outside
               codebook ``pos mod Q``: it scores all vocabulary rows per token
    full-head  ``engine`` scoring all vocabulary rows per token and masking like ``hf``: the
               engine's gain without the codebook-sliced head

    .venv/bin/python benchmarks/bench_decode.py [--quick] [--sizes tiny mid 0.6b] [--batches 1 8]
    .venv/bin/python benchmarks/bench_decode.py --threads 1 2 4   # the token loop's CPU threads
    .venv/bin/python benchmarks/bench_decode.py --device cuda    # Qwen3-0.6B size, bf16 autocast

On the CPU (fp32) every decoder must return the engine's codes (asserted before any ratio is
printed). The 0.6b model is left out there by default (reading its fp32 weights per token bounds
every decoder; minutes per run) and runs at batch 1 only. On CUDA (bf16 autocast, batch 1 and 32
by default) kernels differ with the attended length, so the share of tokens equal to the engine's
is printed instead. Times are medians over interleaved repeats; "audio x" is seconds of audio
decoded per second (100 tokens per audio second), RTF its inverse. With several ``--threads``,
the engine's speed at each count over the first is printed (the machine's load decides it: run
it where the enhancer runs). The last line is the engine's speed over ``hf`` at batch 1 on the
largest model measured.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l3se import decoding  # noqa: E402
from l3se.decoding import DecodeConfig, DecodeEngine, generate, left_pad  # noqa: E402
from l3se.models.llm import QWEN3_0_6B, QWEN3_TINY, LLMConfig  # noqa: E402
from l3se.models.lm import SpeechLM, SpeechLMConfig  # noqa: E402
from l3se.models.tokens import BOS, PAD  # noqa: E402
from tests.models.test_decode_engine import reference_generate  # noqa: E402

MID = {**QWEN3_TINY, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
       "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64}
# The paper LM's text-vocabulary bos/eos ids lie outside the audio vocabulary.
SIZES = {"tiny": "tiny", "mid": MID,
         "0.6b": {**QWEN3_0_6B, "bos_token_id": None, "eos_token_id": None}}
FRAME_RATE = 12.5


def codebook_processor(lm: SpeechLM):
    from transformers import LogitsProcessor

    tokens = lm.tokens

    class CodebookMask(LogitsProcessor):
        """Keeps only the ids of codebook (generated so far) mod Q."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            start, stop = tokens.legal_range(input_ids.shape[1])
            masked = torch.full_like(scores, float("-inf"))
            masked[:, start:stop] = scores[:, start:stop]
            return masked

    return CodebookMask()


def hf_generate(lm: SpeechLM, prefix: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The same decoding through ``model.generate``: left-padded prefix + bos as inputs_embeds."""
    b, t, _ = prefix.shape
    n = lm.tokens.n_codebooks * t
    padded, valid = left_pad(prefix, lengths)
    bos = lm.embed(torch.full((b, 1), BOS, device=prefix.device)).to(prefix.dtype)
    mask = torch.cat([valid, valid.new_ones(b, 1)], 1).long()
    ids = lm.llm.generate(
        inputs_embeds=torch.cat([padded, bos], 1), attention_mask=mask, max_new_tokens=n,
        min_new_tokens=n, do_sample=False, logits_processor=[codebook_processor(lm)],
        pad_token_id=PAD, eos_token_id=None, bos_token_id=BOS,
    )
    # Frames past an item's end are free-running here, and 0 in generate's output.
    frames = torch.arange(t, device=prefix.device)[None, None] < lengths[:, None, None]
    return lm.tokens.unflatten(ids[:, -n:]) * frames


def full_head_generate(lm: SpeechLM, prefix: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``generate`` with every token scored against the whole vocabulary, then masked to its
    codebook: ``codebook_head`` hands out the full head, ``pick`` takes the codebook's slice."""
    tokens, weight, pick = lm.tokens, lm.llm.lm_head.weight, decoding.pick
    calls = itertools.count()

    def pick_in_codebook(logits, cfg, noise, entries):
        start, stop = tokens.legal_range(next(calls))
        masked = torch.full_like(logits, float("-inf"))
        masked[:, start:stop] = logits[:, start:stop]
        return pick(masked, cfg, noise, entries) - start

    with mock.patch.object(lm, "codebook_head", lambda: weight.expand(tokens.n_codebooks, -1, -1)), \
            mock.patch.object(decoding, "pick", pick_in_codebook):
        return generate(lm, prefix, lengths, DecodeConfig(), engine=ENGINE)


# The engine's state outlives a call, as an Enhancer's does: the warm-up captures the CUDA graph
# that the timed calls replay (a graph per model: the key holds the weights' storage).
ENGINE = DecodeEngine()
DECODERS = {
    "per-token": lambda lm, p, n: reference_generate(lm, p, n, DecodeConfig()),
    "engine": lambda lm, p, n: generate(lm, p, n, DecodeConfig(), engine=ENGINE),
    "hf": hf_generate,
    "full-head": full_head_generate,
}


def timed(device: torch.device, fn, *args) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny model, 0.5 s, batch 1 and 4")
    p.add_argument("--seconds", type=float, help="audio per item (default: 1 on the CPU, 4 on CUDA)")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES),
                   help="default: tiny mid on the CPU, 0.6b on CUDA")
    p.add_argument("--batches", nargs="+", type=int, help="default: 1 8 on the CPU, 1 32 on CUDA")
    p.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=list(DECODERS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", nargs="+", type=int, default=[1],
                   help="torch CPU threads, one run per count (default: 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per decoder; the median counts")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.quick:
        args.sizes, args.batches, args.seconds, args.repeats = ["tiny"], [1, 4], 0.5, 2
    args.sizes = args.sizes or (["0.6b"] if gpu else ["tiny", "mid"])
    args.batches = args.batches or ([1, 32] if gpu else [1, 8])
    args.seconds = args.seconds or (4.0 if gpu else 1.0)
    frames = math.ceil(args.seconds * FRAME_RATE)
    amp = torch.autocast(device.type, torch.bfloat16, enabled=gpu)

    print(f"device {device}, {'bf16 autocast' if gpu else 'fp32'}, {frames} frames = "
          f"{8 * frames} tokens per item, greedy")
    print(f"{'model':>6} {'params':>8} {'batch':>5} {'threads':>7} {'decoder':>9} {'seconds':>8} "
          f"{'tok/s':>8} {'audio x':>8} {'RTF':>7} {'same':>6}")
    ratio = None
    engine_times: dict[tuple[str, int], dict[int, float]] = {}
    for size, threads in itertools.product(args.sizes, args.threads):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        cfg = SpeechLMConfig(llm=LLMConfig(pretrained=None, arch=SIZES[size]), prefix="acoustic",
                             acoustic_dim=64, adapter_hidden=64)
        lm = SpeechLM(cfg).to(device).eval()
        params = sum(p.numel() for p in lm.llm.parameters())
        for batch in args.batches if size != "0.6b" or gpu else [1]:
            prefix = torch.randn(batch, frames, lm.hidden_size, device=device)
            # Different lengths exercise the left padding.
            lengths = torch.full((batch,), frames, device=device)
            lengths[1::2] = max(1, frames - 3)
            times, codes = {name: [] for name in args.decoders}, {}
            with torch.inference_mode(), amp:
                for name in args.decoders:  # warm-up; on CUDA the engine captures its graph
                    DECODERS[name](lm, prefix, lengths)
                # Interleaved: the machine's other load hits every decoder alike.
                for _ in range(args.repeats):
                    for name in args.decoders:
                        codes[name], t = timed(device, DECODERS[name], lm, prefix, lengths)
                        times[name].append(t)
            reference = codes.get("engine", next(iter(codes.values())))
            for name in args.decoders:
                same = (codes[name] == reference).float().mean().item()
                if not gpu and same < 1:
                    raise AssertionError(f"{size} batch {batch}: {name} decoded other codes")
                t = statistics.median(times[name])
                audio, tokens = batch * frames / FRAME_RATE, codes[name].numel()
                print(f"{size:>6} {params / 1e6:7.1f}M {batch:>5} {threads:>7} {name:>9} "
                      f"{t:8.3f} {tokens / t:8.0f} {audio / t:8.2f} {t / audio:7.3f} {same:6.1%}")
            if "engine" in times:
                engine_times.setdefault((size, batch), {})[threads] = statistics.median(
                    times["engine"])
            if batch == 1 and {"engine", "hf"} <= times.keys():
                ratio = statistics.median(times["hf"]) / statistics.median(times["engine"])
                label = f"{size}, batch 1"
    for (size, batch), by_threads in engine_times.items():
        first, base = next(iter(by_threads.items()))
        for threads, t in list(by_threads.items())[1:]:
            print(f"engine speed at {threads} threads / at {first}: {base / t:.2f}x "
                  f"({size}, batch {batch})")
    if ratio is not None:
        print(f"engine / transformers generate speed ({label}): {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
