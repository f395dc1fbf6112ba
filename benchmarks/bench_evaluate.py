"""CPU cost of evaluation, and what ``evaluate`` adds to its metrics.

1. Seconds of CPU (process time, one thread) per minute of evaluated audio, per metric of the
   offline set and in total, and of each installed baseline enhancer. Reference-side work that
   ``evaluate`` shares between systems (its transcript for dWER, its speaker embedding) is
   counted once per file, as in a one-system run; WER-CV and PER-CV share one decode of the
   judge, counted under WER-CV.
2. ``evaluate`` (manifest, plan, per-file tasks, rows; in process, no cache) against its
   baseline, a plain loop that loads each file pair and calls the same metric objects, on the
   same files and a cheaper metric set (DNSMOS and the signal metrics). Both build their metrics;
   the two alternate, ``--repeats`` times each after the warm-up of part 1. The last line is the
   ratio of their median CPU seconds.

Material: flite-synthesised sentences (about 5 s each; the paper's eval utterances are 5-10 s)
with white noise at 5 dB; every metric scores the noisy signal against the clean one.

    .venv/bin/python benchmarks/bench_evaluate.py [--files 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_sim.audio import load_audio, write_audio  # noqa: E402
from l3se.evaluation import evaluate  # noqa: E402
from l3se.evaluation.base import SAMPLE_RATE, Pair  # noqa: E402
from l3se.evaluation.baselines import PACKAGES, BaselineUnavailable, load_baseline  # noqa: E402
from l3se.evaluation.registry import OFFLINE, build_metrics  # noqa: E402
from l3se.evaluation.runner import align  # noqa: E402

TEXTS = (
    "please call her and ask her to bring these things with her from the store and then "
    "we will meet at the station",
    "the weather is nice today so we can go for a walk in the park before the rain comes back",
    "i would like to buy a new car next year but the prices are still far too high for me",
)
# Part 2's metrics: the offline set without its recognisers, which would make each run minutes.
COMPARED = ("dnsmos", "pesq", "stoi", "estoi", "sisdr")


def material(n: int, folder: Path) -> Path:
    """An eval-set manifest of ``n`` (clean, noisy, text) files under ``folder``."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        text = TEXTS[i % len(TEXTS)]
        raw = folder / f"{i}.raw.wav"
        subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(raw)], check=True,
                       capture_output=True)
        clean = load_audio(raw)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** 0.5)
        row = {"id": str(i), "subset": "all", "clean": f"clean/{i}.wav", "noisy": f"noisy/{i}.wav",
               "snr_db": 5.0, "text": text}
        write_audio(folder / row["clean"], clean)
        write_audio(folder / row["noisy"], clean + noise)
        rows.append(row)
    manifest = folder / "evalset.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def pairs(manifest: Path) -> list[tuple[str, Path, Path]]:
    """(text, clean path, noisy path) per manifest row."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [(r["text"], manifest.parent / r["clean"], manifest.parent / r["noisy"]) for r in rows]


def metric_costs(files: list[tuple[str, np.ndarray, np.ndarray]], minutes: float) -> None:
    t0 = time.process_time()
    metrics, _ = build_metrics(OFFLINE, {}, threads=1, transcripts=TEXTS)
    print(f"model loading: {time.process_time() - t0:.1f} s CPU")
    cost = dict.fromkeys((m.name for m in metrics), 0.0)
    wall = time.perf_counter()
    for text, clean, noisy in files:
        pair = Pair(est=noisy, est_aligned=noisy, ref=clean, text=text)
        for m in metrics:
            t = time.process_time()
            m.score(pair)
            cost[m.name] += time.process_time() - t
    wall = time.perf_counter() - wall
    for name, sec in cost.items():
        print(f"  {name:7s} {sec / minutes:7.1f} s CPU per minute of audio")
    print(f"wall clock {wall / minutes:.1f} s per minute of audio (1 thread, machine shared)")
    print(f"offline metric set ({','.join(OFFLINE)}): {sum(cost.values()) / minutes:.1f} s CPU "
          "per minute of audio")
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


def run_evaluate(manifest: Path) -> None:
    evaluate(manifest, {"noisy": None}, metrics=",".join(COMPARED), progress=False)


def run_plain_loop(manifest: Path) -> None:
    metrics, _ = build_metrics(COMPARED, {}, threads=1)
    for text, clean_path, noisy_path in pairs(manifest):
        ref = load_audio(clean_path, SAMPLE_RATE)
        est = load_audio(noisy_path, SAMPLE_RATE)
        pair = Pair(est=est, est_aligned=align(est, len(ref)), ref=ref, text=text)
        for m in metrics:
            m.score(pair)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = material(args.files, Path(tmp))
        files = [(text, load_audio(c), load_audio(n)) for text, c, n in pairs(manifest)]
        minutes = sum(len(c) for _, c, _ in files) / SAMPLE_RATE / 60
        print(f"audio: {args.files} files, {minutes * 60:.1f} s")
        metric_costs(files, minutes)

        seconds: dict[str, list[float]] = {"evaluate": [], "plain loop": []}
        for _ in range(args.repeats):
            for name, run in (("evaluate", run_evaluate), ("plain loop", run_plain_loop)):
                t = time.process_time()
                run(manifest)
                seconds[name].append(time.process_time() - t)
    for name, runs in seconds.items():
        print(f"{name:10s} ({','.join(COMPARED)}): " + ", ".join(f"{s:.2f}" for s in runs) + " s CPU")
    ours, plain = (statistics.median(seconds[k]) for k in ("evaluate", "plain loop"))
    print(f"evaluate / plain loop: {ours / plain:.2f}x CPU (median {ours:.2f} s vs {plain:.2f} s, "
          f"{args.repeats} interleaved runs each)")


if __name__ == "__main__":
    main()
