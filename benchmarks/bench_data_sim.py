"""Mixtures per CPU-second: l3se's ``Mixer`` against a plain NumPy/SciPy mixer of the same
semantics, both on the same material decoded beforehand.

Per mixture both sides pick an utterance and crop 4 s from it (shorter ones whole, as
``MixtureDataset`` does), convolve it with a random RIR with probability 0.5 (direct path
normalised to gain 1 and aligned to the clean signal), crop or loop a random noise clip, scale
it to an SNR drawn from -5..20 dB over active 20 ms frames, randomise the level over active
frames and protect input and target against clipping. The baseline does this the
straightforward way (``scipy.signal.fftconvolve`` per call, no caches); ours is ``Mixer`` after
one untimed pass over the same mixtures, so its caches are as warm as in a long run. Repeats
alternate the two sides; rates are medians over repeats of mixtures per CPU-second of this
process (per core; less sensitive than wall time to other load on the machine).

    .venv/bin/python benchmarks/bench_data_sim.py [--data data/starter] [--n 400] [--repeats 5]

Without ``--data`` it generates a small synthetic corpus in a temporary folder.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from data_sim.audio import SAMPLE_RATE, load_audio, write_audio
from data_sim.mixer import FRAME, MixConfig, Mixer
from data_sim.sources import load_source, read_rir_folder

SEG = 4.0


def synthetic_corpus(root: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    sr = SAMPLE_RATE
    for i in range(40):
        n = int(rng.uniform(2, 12) * sr)
        t = np.arange(n) / sr
        x = np.sin(2 * np.pi * 140 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.05 * rng.standard_normal(n)
        write_audio(root / "speech" / f"s{i:03d}.flac", (0.3 * x).astype(np.float32))
    for i in range(20):
        write_audio(root / "noise" / f"n{i:03d}.wav",
                    (0.1 * rng.standard_normal(int(rng.uniform(10, 30) * sr))).astype(np.float32))
    for i in range(50):
        n = int(rng.uniform(0.3, 1.0) * sr)
        rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.2
        rir[0] = 1.0
        write_audio(root / "rir" / f"r{i:03d}.wav", rir.astype(np.float32))
    return root / "speech", root / "noise", root / "rir"


def pick_crop(speech: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    x = speech[int(rng.integers(len(speech)))]
    n = int(SEG * SAMPLE_RATE)
    if len(x) <= n:
        return x
    start = int(rng.integers(0, len(x) - n + 1))
    return x[start : start + n]


def active_power(x: np.ndarray, cfg: MixConfig) -> float:
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    energy = (frames**2).mean(axis=1)
    return float(energy[energy >= energy.max() * 10 ** (-cfg.active_db / 10)].mean())


def baseline_mix(clean, noises, rirs, cfg: MixConfig, rng: np.random.Generator):
    speech = target = clean
    if rng.random() < cfg.p_reverb:
        rir = rirs[int(rng.integers(len(rirs)))]
        d = int(np.argmax(np.abs(rir)))
        speech = fftconvolve(clean, rir / rir[d])[d : d + len(clean)]
    snr = rng.uniform(*cfg.snr_range)
    noise = noises[int(rng.integers(len(noises)))]
    if len(noise) >= len(speech):
        start = int(rng.integers(0, len(noise) - len(speech) + 1))
        noise = noise[start : start + len(speech)]
    else:
        noise = np.resize(np.roll(noise, -int(rng.integers(len(noise)))), len(speech))
    noise = noise * math.sqrt(active_power(speech, cfg) / (active_power(noise, cfg) * 10 ** (snr / 10)))
    noisy = speech + noise
    gain = 10 ** (rng.uniform(*cfg.level_range_db) / 20) / math.sqrt(active_power(noisy, cfg))
    peak = max(float(np.abs(noisy).max()), float(np.abs(target).max())) * gain
    if peak > cfg.peak_limit:
        gain *= cfg.peak_limit / peak
    return noisy * gain, target * gain, speech * gain, noise * gain


def cpu_rate(fn, n: int) -> float:
    """Mixtures per CPU-second of ``fn(rng)`` over ``n`` fixed seeds."""
    start = time.process_time()
    for i in range(n):
        fn(np.random.default_rng([0, i]))
    return n / (time.process_time() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="starter corpus root (default: synthetic)")
    ap.add_argument("--n", type=int, default=400, help="mixtures per side and repeat")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per side")
    ap.add_argument("--utterances", type=int, default=200, help="speech files held decoded")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            speech_src = args.data / "speech" / "train.jsonl"
            noise_src, rir_src = args.data / "noise" / "train.jsonl", args.data / "rir" / "train.jsonl"
            rir_items = load_source(rir_src)
        else:
            speech_src, noise_src, rir_src = synthetic_corpus(Path(tmp))
            rir_items = read_rir_folder(rir_src)
        speech_items, noise_items = load_source(speech_src), load_source(noise_src)
        chosen = np.random.default_rng(0).permutation(len(speech_items))[: args.utterances]
        speech = [load_audio(speech_items[i].path) for i in chosen]
        noises = [load_audio(item.path, reject_silent=True) for item in noise_items]
        rirs = [load_audio(item.path, reject_silent=True) for item in rir_items]
        cfg = MixConfig(segment_seconds=SEG, p_reverb=0.5)
        mixer = Mixer(cfg, noise_items, rir_items)
        sides = {
            "baseline (NumPy/SciPy, fftconvolve)": lambda rng: baseline_mix(
                pick_crop(speech, rng), noises, rirs, cfg, rng),
            "l3se Mixer": lambda rng: mixer(pick_crop(speech, rng), rng),
        }
        rates: dict[str, list[float]] = {name: [] for name in sides}
        for rep in range(args.repeats + 1):
            for name, fn in sides.items():
                rate = cpu_rate(fn, args.n)
                # The first pass decodes the mixer's files (their folder must still exist) and
                # warms both sides.
                if rep:
                    rates[name].append(rate)
    print(f"material: {len(speech)} utterances, {len(noises)} noise clips, {len(rirs)} RIRs "
          f"({'starter corpus' if args.data else 'synthetic'}); {SEG:g} s crops, p_reverb "
          f"{cfg.p_reverb}; {args.n} mixtures x {args.repeats} repeats per side")
    print(f"{'mixtures per CPU-second':38s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for name, r in rates.items():
        print(f"{name:38s} {statistics.median(r):8.1f} {min(r):8.1f} {max(r):8.1f}")
    base, ours = (statistics.median(r) for r in rates.values())
    print(f"end-to-end ratio l3se / baseline: {ours / base:.2f}x")


if __name__ == "__main__":
    main()
