"""Decoding speed of the SpeechLM: tokens/s of ``l3se.decoding.generate`` against transformers'
``generate`` on the same random-init model, greedy, with the same codebook constraint (a
LogitsProcessor masking every id outside codebook ``pos mod Q``), at batch 1 and batch 16.

    .venv/bin/python benchmarks/bench_decode.py [--quick] [--seconds 4] [--device cpu]

Both decoders must return the same codes (checked); the last line is the speed ratio of the
project's loop over ``generate`` (geometric mean over the measured cases).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l3se.decoding import DecodeConfig, generate, left_pad  # noqa: E402
from l3se.models.llm import QWEN3_TINY, LLMConfig  # noqa: E402
from l3se.models.lm import SpeechLM, SpeechLMConfig  # noqa: E402
from l3se.models.tokens import BOS, PAD  # noqa: E402

MID = {**QWEN3_TINY, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
       "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64}
SIZES = {"tiny": "tiny", "mid": MID, "0.6b": "0.6b"}


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


def hf_generate(lm: SpeechLM, prefix: torch.Tensor, lengths: torch.Tensor, processor) -> torch.Tensor:
    """The same decoding through ``model.generate``: left-padded prefix + bos as inputs_embeds."""
    b, t, _ = prefix.shape
    padded, valid = left_pad(prefix, lengths)
    bos = lm.embed(torch.full((b, 1), BOS, device=prefix.device)).to(prefix.dtype)
    mask = torch.cat([valid, valid.new_ones(b, 1)], 1).long()
    ids = lm.llm.generate(
        inputs_embeds=torch.cat([padded, bos], 1), attention_mask=mask,
        max_new_tokens=lm.tokens.n_codebooks * t, min_new_tokens=lm.tokens.n_codebooks * t,
        do_sample=False, logits_processor=[processor], pad_token_id=PAD, eos_token_id=None,
        bos_token_id=BOS,
    )
    return lm.tokens.unflatten(ids[:, -lm.tokens.n_codebooks * t :])


def timed(device: torch.device, fn, *args) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 s of audio, batch 1 and 4, 2 repeats")
    p.add_argument("--seconds", type=float, default=4.0, help="audio per item (12.5 frames/s)")
    p.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case; the best counts")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.batches, args.repeats = 1.0, [1, 4], 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    frames = math.ceil(args.seconds * 12.5)

    print(f"device {device}, {args.dtype}, torch threads {torch.get_num_threads()}, "
          f"{frames} frames = {8 * frames} tokens per item, greedy")
    print(f"{'model':>6} {'params':>8} {'batch':>5} {'l3se tok/s':>11} {'generate tok/s':>15} "
          f"{'ratio':>6} {'same codes':>10}")
    ratios = []
    for size in args.sizes:
        torch.manual_seed(0)
        cfg = SpeechLMConfig(llm=LLMConfig(pretrained=None, arch=SIZES[size]), prefix="acoustic",
                             acoustic_dim=64, adapter_hidden=64)
        lm = SpeechLM(cfg).to(device, dtype).eval()
        processor = codebook_processor(lm)
        params = sum(p.numel() for p in lm.llm.parameters())
        for batch in args.batches:
            prefix = torch.randn(batch, frames, lm.hidden_size, device=device, dtype=dtype)
            # Different lengths exercise the left padding in both decoders.
            lengths = torch.full((batch,), frames, device=device)
            lengths[1::2] = max(1, frames - 3)
            short = (prefix[:, :2], lengths.clamp(max=2))
            generate(lm, *short, DecodeConfig())  # warm-up
            t_ours = t_hf = math.inf
            with torch.inference_mode():
                hf_generate(lm, *short, processor)
                # Interleaved and best-of: the machine's other load hits both decoders alike.
                for _ in range(args.repeats):
                    ours, t = timed(device, generate, lm, prefix, lengths, DecodeConfig())
                    t_ours = min(t_ours, t)
                    theirs, t = timed(device, hf_generate, lm, prefix, lengths, processor)
                    t_hf = min(t_hf, t)
            # Frames past an item's end are free-running in generate's output: compare valid ones.
            valid = torch.arange(frames, device=device)[None, None] < lengths[:, None, None]
            same = torch.equal(ours * valid, theirs * valid)
            n = batch * 8 * frames
            ratios.append(t_hf / t_ours)
            print(f"{size:>6} {params / 1e6:7.1f}M {batch:>5} {n / t_ours:11.0f} {n / t_hf:15.0f} "
                  f"{t_hf / t_ours:6.2f} {str(same):>10}")
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"l3se decoding / transformers generate speed ratio: {mean:.2f}x")


if __name__ == "__main__":
    main()
