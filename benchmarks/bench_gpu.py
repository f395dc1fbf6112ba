"""Paper-scale training and decoding speed on one GPU, with random weights and synthetic audio
(no hub, no data, no trained models): the engine's optimizer step of every stage at the paper's
per-GPU batch in bf16, then the paper-size LM's decoding speed at batch 1 and 32.

    .venv/bin/python benchmarks/bench_gpu.py                 # paper configs on CUDA
    .venv/bin/python benchmarks/bench_gpu.py --device cpu    # tiny configs, 2 steps: smoke test

Each stage's task is what ``l3se train STAGE --config paper`` trains, built on the device by
``recipes.stages.build_offline``: WavLM-Large and Qwen3-0.6B from l3se's stored architectures,
the earlier stages' models from their paper configs. ``Trainer`` (the engine) then runs its own
optimizer step (``grad_accum`` forward/backward passes, gradient clip, AdamW; for codec-2 also
the discriminator's update) on one batch kept on the device, so data loading is not timed. A
batch holds ``train.batch_size`` crops of ``data.mix.segment_seconds`` (the longest a training
batch holds); s2t trains on whole utterances and gets 12 s ones (LibriSpeech's mean) with
36-word transcripts. Step times are medians over the timed steps, each closed by a CUDA
synchronize; peak memory is ``torch.cuda.max_memory_allocated`` over a stage's steps (its models,
optimizer state and activations).

Decoding runs ``l3se.decoding.generate`` (greedy, KV cache, bf16 autocast as the enhancer does)
on the lm stage's SpeechLM with random prefixes as long as the chunks the enhancer decodes
(``data.mix.segment_seconds`` of the lm config). RTF is decoding time over seconds of audio
produced (all items of the batch); below 1 is faster than real time.

Sized to finish within 6 minutes on one H100/H200 (estimated from CPU measurements: it has not
run on a GPU yet); it prints its total time.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_sim.dataset import collate  # noqa: E402
from l3se.config import load_config  # noqa: E402
from l3se.decoding import DecodeConfig, DecodeEngine, generate  # noqa: E402
from l3se.models.tokenizer import build_tokenizer  # noqa: E402
from l3se.training.distributed import seed_everything  # noqa: E402
from l3se.training.engine import Trainer  # noqa: E402
from recipes.stages import PIPELINE, STAGES, build_offline, resolve_config  # noqa: E402

SAMPLE_RATE = 16000
# Samples per codec frame: the LM decodes n_codebooks tokens per 1280 samples (12.5 Hz).
FRAME = 1280
# s2t's whole utterances: LibriSpeech's mean length at paper scale, the starter corpus's at tiny.
UTTERANCE_SECONDS = {"paper": 12.0, "tiny": 3.0}
WORDS_PER_SECOND = 3
WORDS = ["speech", "enhancement", "keeps", "the", "words", "of", "every", "noisy", "sentence",
         "clean", "while", "a", "model", "listens", "to", "one", "voice", "in", "busy", "room"]


def transcript(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n_words))


def synthetic_batch(batch_size: int, seconds: float, device: torch.device) -> dict:
    """Clean and noisy waveforms [B, S] with full lengths and transcripts."""
    n = round(seconds * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    pitch = 120 + 40 * torch.rand(batch_size, 1)
    clean = 0.1 * torch.sin(2 * math.pi * pitch * t) * (torch.sin(2 * math.pi * 2 * t) > -0.3)
    noisy = clean + 0.03 * torch.randn(batch_size, n)
    words = round(seconds * WORDS_PER_SECOND)
    return {
        "clean": clean.to(device),
        "noisy": noisy.to(device),
        "lengths": torch.full((batch_size,), n, device=device),
        "meta": [{"id": str(i), "text": transcript(i, words)} for i in range(batch_size)],
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}"


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_stage(name: str, scale: str, device: torch.device, args, tokenizer: str):
    """(printed row, the trained task) of ``args.steps`` engine steps of stage ``name``."""
    stage = STAGES[name]
    overrides = [
        f"train.device={device.type}",
        f"train.precision={'bf16' if device.type == 'cuda' else 'fp32'}",
        "train.num_workers=0",
    ]
    if name == "s2t":
        overrides += ["tokenizer_from_data=false", f"model.tokenizer={tokenizer}"]
    cfg = load_config(stage.config_class, resolve_config(stage.folder, scale), overrides)
    seed_everything(0)
    # Built on the device itself: random init of the paper models (and of the earlier stages'
    # ones they are made from) takes minutes on a CPU.
    task, _ = build_offline(name, cfg, device=str(device), saved_models=False, scale=scale)
    train = cfg.train
    # The sampler needs only a length: the steps read the synthetic batch below.
    trainer = Trainer(task, train, cfg.optim, range(train.batch_size * train.grad_accum),
                      collate, optim_d=cfg.optim_d, name=name)
    seconds = cfg.data.mix.segment_seconds or UTTERANCE_SECONDS[scale]
    batches = itertools.repeat(synthetic_batch(train.batch_size, seconds, device))
    reset_memory(device)
    for _ in range(args.warmup):
        # The engine's own optimizer step, without its data loader, logs and checkpoints.
        trainer._train_step(batches)
    times = []
    for _ in range(args.steps):
        synchronize(device)
        start = time.perf_counter()
        trainer._train_step(batches)
        synchronize(device)
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    audio = train.batch_size * train.grad_accum * seconds
    row = (f"{name:8} {train.batch_size:>3} x {train.grad_accum} x {seconds:4.1f} s "
           f"{step:8.3f} {audio / step:12.1f} {peak_gib(device):>9}")
    del trainer
    return row, task


@torch.inference_mode()
def bench_decoding(lm, seconds: float, batch: int, device: torch.device) -> str:
    frames = math.ceil(seconds * SAMPLE_RATE / FRAME)
    lengths = torch.full((batch,), frames, device=device)
    prefix = torch.randn(batch, frames, lm.hidden_size, device=device)
    engine = DecodeEngine()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        # Warm-up at the timed shape: on CUDA it captures the step graph the timed call replays.
        generate(lm, prefix, lengths, DecodeConfig(), engine=engine)
        reset_memory(device)
        synchronize(device)
        start = time.perf_counter()
        generate(lm, prefix, lengths, DecodeConfig(), engine=engine)
        synchronize(device)
    wall = time.perf_counter() - start
    tokens = batch * lm.tokens.n_codebooks * frames
    audio = batch * frames * FRAME / SAMPLE_RATE
    return (f"{batch:>5} {frames * lm.tokens.n_codebooks:>7} {tokens / wall:9.0f} "
            f"{wall / audio:7.3f} {peak_gib(device):>9}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda: paper configs; cpu: tiny configs")
    p.add_argument("--stages", nargs="+", default=PIPELINE, choices=list(STAGES))
    p.add_argument("--steps", type=int, help="timed steps per stage (default 20; cpu 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 3; cpu 1)")
    p.add_argument("--decode-batches", nargs="+", type=int, default=[1, 32])
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA device here: use --device cpu for the tiny smoke run")
    gpu = device.type == "cuda"
    scale = "paper" if gpu else "tiny"
    args.steps = args.steps or (20 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"{scale} configs on {name}, {'bf16 autocast' if gpu else 'fp32'}, torch "
          f"{torch.__version__}; {args.warmup} warm-up + {args.steps} timed steps per stage")
    print(f"{'stage':8} {'batch x accum x len':>19} {'step s':>8} {'audio s / s':>12} "
          f"{'peak GiB':>9}")
    started = time.perf_counter()
    lm_task = None
    with tempfile.TemporaryDirectory() as tmp:
        texts = [transcript(i, 40) for i in range(64)]
        build_tokenizer(texts, Path(tmp) / "tokenizer", 512)
        for stage in args.stages:
            row, task = bench_stage(stage, scale, device, args, str(Path(tmp) / "tokenizer"))
            print(row, flush=True)
            if stage == "lm":
                lm_task = task
            del task
            reset_memory(device)
    if lm_task is not None:
        lm = lm_task.lm.eval()
        del lm_task  # the NI-Encoder and codec leave the device
        reset_memory(device)
        seconds = load_config(STAGES["lm"].config_class,
                              resolve_config("lm", scale)).data.mix.segment_seconds
        print(f"decoding {seconds:g} s chunks (greedy) with the {scale} SpeechLM, "
              f"{sum(p.numel() for p in lm.parameters()) / 1e6:.0f}M parameters")
        print(f"{'batch':>5} {'tokens':>7} {'tokens/s':>9} {'RTF':>7} {'peak GiB':>9}")
        for batch in args.decode_batches:
            print(bench_decoding(lm, seconds, batch, device), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
