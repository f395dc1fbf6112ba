"""Mixtures per second per core: l3se's mixer against audiomentations on the same files.

Both sides get the same 4 s speech crops. The baseline applies audiomentations'
``ApplyImpulseResponse`` (p = 0.5) and ``AddBackgroundNoise`` (SNR -5..20 dB) with their own file
loading; ours runs ``Mixer`` (p_reverb = 0.5, active-power SNR, level randomisation, clipping
protection). Measured twice: on crops decoded beforehand (the simulation itself) and with the
crop decoded inside the loop by the loader both share. A last part measures the share of a
training step spent waiting for data with 2 DataLoader workers.

    .venv/bin/python benchmarks/bench_data_sim.py [--data data/starter] [--n 400]

Without ``--data`` it generates a small synthetic corpus in a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_sim.audio import load_audio, write_audio
from data_sim.dataset import MixtureDataset, collate
from data_sim.mixer import MixConfig, Mixer
from data_sim.sources import load_source, read_rir_folder

SEG = 4.0


def synthetic_corpus(root: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    sr = 16000
    for i in range(40):
        n = int(rng.uniform(5, 12) * sr)
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


def crops(speech, n, seed=0) -> list[tuple[str, float]]:
    rng = np.random.default_rng(seed)
    return [
        (item.path, float(rng.uniform(0, max(0.0, item.duration - SEG))))
        for item in (speech[i % len(speech)] for i in range(n))
    ]


def rate(fn, todo, decoded: bool) -> float:
    """Mixtures/s of ``fn(clean, i)`` over ``todo``; speech decoded inside the timing or before."""
    clean = [load_audio(p, offset=o, duration=SEG) for p, o in todo] if decoded else None
    for i in range(20):  # warm-up: file lists, caches
        fn(load_audio(todo[i][0], offset=todo[i][1], duration=SEG), i)
    start = time.perf_counter()
    for i, (path, off) in enumerate(todo):
        fn(clean[i] if decoded else load_audio(path, offset=off, duration=SEG), i)
    return len(todo) / (time.perf_counter() - start)


def baseline_fn(noise_dir, rir_dir):
    import audiomentations as A

    augment = A.Compose([
        A.ApplyImpulseResponse(ir_path=str(rir_dir), p=0.5, leave_length_unchanged=True),
        A.AddBackgroundNoise(sounds_path=str(noise_dir), min_snr_db=-5.0, max_snr_db=20.0, p=1.0),
    ])
    return lambda clean, i: augment(samples=clean, sample_rate=16000)


def ours_fn(noises, rirs):
    mixer = Mixer(MixConfig(segment_seconds=SEG, p_reverb=0.5), noises, rirs)
    return lambda clean, i: mixer(clean, np.random.default_rng([0, 0, i]))


def bench_wait_share(speech, noises, rirs, steps=30, batch=8) -> tuple[float, float]:
    """A small conv net's training step fed by 2 workers: share of wall time spent waiting."""
    torch.set_num_threads(1)
    ds = MixtureDataset(speech, noises, rirs, MixConfig(segment_seconds=SEG), length=steps * batch)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=2, collate_fn=collate,
                                         persistent_workers=False, prefetch_factor=4)
    net = torch.nn.Sequential(
        torch.nn.Conv1d(1, 64, 400, stride=160), torch.nn.GELU(),
        torch.nn.Conv1d(64, 64, 5, padding=2), torch.nn.GELU(), torch.nn.Conv1d(64, 1, 1),
    )
    opt = torch.optim.AdamW(net.parameters())
    waiting = 0.0
    it = iter(loader)
    next(it)  # worker start-up is not a steady-state wait
    start = time.perf_counter()
    for _ in range(steps - 1):
        t0 = time.perf_counter()
        b = next(it)
        waiting += time.perf_counter() - t0
        loss = net(b["noisy"][:, None]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    total = time.perf_counter() - start
    return waiting / total, (steps - 1) / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="starter corpus root (default: synthetic)")
    ap.add_argument("--n", type=int, default=400, help="mixtures per side")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            speech_src = args.data / "speech" / "train.jsonl"
            noise_dir, rir_dir = args.data / "noise" / "train", args.data / "rir" / "train"
        else:
            speech_src, noise_dir, rir_dir = synthetic_corpus(Path(tmp))
        speech = [s for s in load_source(speech_src) if s.duration >= SEG] or load_source(speech_src)
        noises, rirs = load_source(noise_dir), read_rir_folder(rir_dir)
        print(f"material: {len(speech)} speech, {len(noises)} noise, {len(rirs)} RIR files "
              f"({'starter corpus' if args.data else 'synthetic'}); {SEG:.0f} s segments, p_reverb 0.5")
        todo = crops(speech, args.n)
        base_fn, our_fn = baseline_fn(noise_dir, rir_dir), ours_fn(noises, rirs)
        sim = {name: rate(fn, todo, decoded=True) for name, fn in (("base", base_fn), ("ours", our_fn))}
        e2e = {name: rate(fn, todo, decoded=False) for name, fn in (("base", base_fn), ("ours", our_fn))}
        share, steps = bench_wait_share(speech, noises, rirs)
    print("mixtures/s/core               simulation only   with speech decoding (same loader)")
    print(f"baseline (audiomentations)    {sim['base']:15.1f}   {e2e['base']:15.1f}")
    print(f"l3se Mixer                    {sim['ours']:15.1f}   {e2e['ours']:15.1f}")
    print(f"end-to-end ratio l3se / baseline: {e2e['ours'] / e2e['base']:.2f}x")
    print(f"training step fed by 2 workers: {100 * share:.1f}% of wall time waiting for data "
          f"({steps:.2f} steps/s, batch 8 x {SEG:.0f} s)")
    print(f"ratio l3se / baseline (simulation): {sim['ours'] / sim['base']:.2f}x")


if __name__ == "__main__":
    main()
