"""Real-time factor of ``l3se enhance`` with the bundled default model, one chunk at a time (the
in-run baseline) and batched as the model's settings say; the last line is the speedup.

The corpus is ``--files`` segments of ``--seconds`` cut from ``examples/``. Chunks of any
lengths share a batch (the LM decodes them left-padded, see ``Enhancer._batches``); equal lengths
keep the comparison free of padding, so this measures what ``--batch-size`` buys at best.

    .venv/bin/python benchmarks/bench_enhance.py [--files 8] [--seconds 2] [--device cpu]
                                                 [--threads N] [--decode-threads 1]

RTF < 1 is faster than real time: end-to-end is wall time (reading, enhancing, writing, report),
model time is the enhancer's alone. Outputs are rewritten in every run (overwrite).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_sim.audio import load_audio, write_audio  # noqa: E402
from l3se.enhance_corpus import enhance_corpus  # noqa: E402
from l3se.enhancer import DEFAULT_MODEL_DIR, Enhancer  # noqa: E402


def write_segments(out: Path, n: int, seconds: float, rate: int) -> float:
    """``n`` segments of ``seconds`` from the example files at random offsets; their total
    duration."""
    rng = np.random.default_rng(0)
    examples = [load_audio(p, rate) for p in sorted((ROOT / "examples").glob("*.wav"))]
    length = round(seconds * rate)
    for i in range(n):
        x = examples[i % len(examples)]
        start = int(rng.integers(0, len(x) - length + 1))
        write_audio(out / f"{i:03d}.wav", x[start : start + length], rate)
    return n * length / rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0, help="segment length (at most 3 s)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--decode-threads", type=int, default=1,
                    help="CPU threads of the token loop (the enhancer's default: 1)")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = Enhancer.from_pretrained(DEFAULT_MODEL_DIR, device=args.device,
                                     decode_threads=args.decode_threads)
    batched = model.cfg.chunks_per_batch
    with tempfile.TemporaryDirectory() as tmp:
        noisy, out = Path(tmp) / "noisy", Path(tmp) / "out"
        audio = write_segments(noisy, args.files, args.seconds, model.sample_rate)
        model.enhance(load_audio(noisy / "000.wav", model.sample_rate), model.sample_rate)  # warm-up
        print(f"bundled model, {args.files} files x {args.seconds:g} s, device {model.device}, "
              f"{torch.get_num_threads()} torch threads, token loop {args.decode_threads}")
        rtf = {}
        for size in (1, batched):
            start = time.perf_counter()
            report = enhance_corpus(noisy, out, model, files_per_batch=size,
                                    chunks_per_batch=size, overwrite=True, progress=False)
            wall = time.perf_counter() - start
            s = report["summary"]
            assert s["ok"] == args.files, s
            rtf[size] = s["rtf"]
            print(f"{size:3d} chunks per batch: end-to-end RTF {wall / audio:.3f}, model RTF "
                  f"{s['rtf']:.3f} ({wall:.2f} s)")
    print(f"batching speedup ({batched} chunks per batch vs 1, model time): "
          f"{rtf[1] / rtf[batched]:.2f}x")


if __name__ == "__main__":
    main()
