"""CPU cost of the offline metric set: seconds of CPU (process time, one thread) per minute of
evaluated audio, per metric and in total, and of each installed baseline enhancer.

Material: flite-synthesised sentences (about 5 s each; the paper's eval utterances are 5-10 s)
with white noise at 5 dB; every metric scores the noisy signal against the clean one. Reference
-side work that ``evaluate`` shares between systems (its transcript for dWER, its speaker
embedding) is counted once per file, as in a one-system run. WER-CV and PER-CV share one decode
of the judge, counted under WER-CV.

    .venv/bin/python benchmarks/bench_evaluate.py [--files 6]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_sim.audio import load_audio  # noqa: E402
from l3se.evaluation.base import Pair  # noqa: E402
from l3se.evaluation.baselines import PACKAGES, BaselineUnavailable, load_baseline  # noqa: E402
from l3se.evaluation.registry import OFFLINE, build_metrics  # noqa: E402

TEXTS = (
    "please call her and ask her to bring these things with her from the store and then "
    "we will meet at the station",
    "the weather is nice today so we can go for a walk in the park before the rain comes back",
    "i would like to buy a new car next year but the prices are still far too high for me",
)


def material(n: int, folder: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(transcript, clean, noisy) for ``n`` files."""
    files = []
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / f"{i}.wav"
        text = TEXTS[i % len(TEXTS)]
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)],
                       check=True, capture_output=True)
        clean = load_audio(path)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** 0.5)
        files.append((text, clean, clean + noise))
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = material(args.files, Path(tmp))
    minutes = sum(len(c) for _, c, _ in files) / 16000 / 60
    t0 = time.process_time()
    metrics, _ = build_metrics(OFFLINE, {}, threads=1, transcripts=TEXTS)
    load_s = time.process_time() - t0
    cost = dict.fromkeys((m.name for m in metrics), 0.0)
    wall = time.perf_counter()
    for text, clean, noisy in files:
        pair = Pair(est=noisy, est_aligned=noisy, ref=clean, text=text)
        for m in metrics:
            t = time.process_time()
            m.score(pair)
            cost[m.name] += time.process_time() - t
    wall = time.perf_counter() - wall
    print(f"audio: {args.files} files, {minutes * 60:.1f} s; model loading: {load_s:.1f} s CPU")
    for name, sec in cost.items():
        print(f"  {name:7s} {sec / minutes:7.1f} s CPU per minute of audio")
    total = sum(cost.values()) / minutes
    print(f"wall clock {wall / minutes:.1f} s per minute of audio (1 thread, machine shared)")
    for name in PACKAGES:
        try:
            baseline = load_baseline(name)
        except BaselineUnavailable as e:
            print(f"  baseline {e}")
            continue
        t = time.process_time()
        for _, _, noisy in files:
            baseline.enhance(noisy)
        print(f"  baseline {name:11s} {(time.process_time() - t) / minutes:5.1f} s CPU per minute of audio")
    print(f"offline metric set ({','.join(OFFLINE)}): {total:.1f} s CPU per minute of audio")


if __name__ == "__main__":
    main()
