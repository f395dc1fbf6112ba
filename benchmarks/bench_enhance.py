"""Real-time factor of ``l3se enhance`` on a folder of noisy files with the tiny random-init model
(tests/enhance/tiny_model.py): end-to-end wall time (reading, enhancing, writing, report) and the
model's own time, per second of audio, at several batch sizes.

    .venv/bin/python benchmarks/bench_enhance.py [--files 8] [--seconds 3] [--batch-sizes 1 8]
                                                 [--device cpu] [--threads 1]

RTF < 1 is faster than real time. Outputs are rewritten for every batch size (--overwrite).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_sim.audio import write_audio  # noqa: E402
from l3se.enhance_corpus import enhance_corpus  # noqa: E402
from l3se.enhancer import Enhancer  # noqa: E402
from tests.conftest import speech_like  # noqa: E402
from tests.enhance.tiny_model import make_tiny_model_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0, help="mean file length")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--device", default="auto")
    # One thread: on a shared CPU more threads mostly add contention (measured 13x slower at 2).
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Enhancer.from_pretrained(make_tiny_model_dir(tmp / "model"), device=args.device)
        audio = 0.0
        for i in range(args.files):
            seconds = args.seconds * rng.uniform(0.75, 1.25)
            x = speech_like(rng, seconds)
            write_audio(tmp / "noisy" / f"{i:03d}.wav", x + 0.05 * rng.standard_normal(len(x)))
            audio += len(x) / 16000
        model.enhance(np.zeros(16000, np.float32), 16000)  # warm-up
        print(f"{args.files} files, {audio:.1f} s of audio, device {model.device}, "
              f"{args.threads} threads")
        for bs in args.batch_sizes:
            model.cfg.batch_size = bs
            start = time.perf_counter()
            report = enhance_corpus(tmp / "noisy", tmp / "out", model, overwrite=True,
                                    progress=False)
            wall = time.perf_counter() - start
            s = report["summary"]
            assert s["ok"] == args.files, s
            print(f"batch {bs:3d}: end-to-end RTF {wall / audio:.3f}, model RTF {s['rtf']:.3f} "
                  f"({wall:.2f} s)")


if __name__ == "__main__":
    main()
