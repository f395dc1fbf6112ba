"""Statistics of simulated mixtures: what a stage will actually train on."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data_sim.dataset import MixtureDataset, collate


def summarize(dataset: MixtureDataset, n: int = 200, workers: int = 2, batch_size: int = 8) -> dict:
    """Draw ``n`` items through a DataLoader and describe them."""
    n = min(n, len(dataset))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, range(n)),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
    )
    snrs, levels, peaks, seconds, reverb, skipped = [], [], [], [], 0, []
    start = time.perf_counter()
    for batch in tqdm(loader, desc="simulating", unit="batch"):
        for i, meta in enumerate(batch["meta"]):
            x = batch["noisy"][i, : batch["lengths"][i]].numpy()
            seconds.append(len(x) / dataset.cfg.sample_rate)
            levels.append(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12))
            peaks.append(float(max(np.abs(x).max(), batch["clean"][i].abs().max())))
            reverb += bool(meta["reverb"])
            if meta["snr_db"] is not None:
                snrs.append(meta["snr_db"])
            skipped.extend(meta["skipped"])
    elapsed = time.perf_counter() - start
    return {
        "mixtures": n,
        "speech_files": len(dataset.speech),
        "noise_files": len(dataset.mixer.noises),
        "rir_files": len(dataset.mixer.rirs),
        "audio_seconds": float(np.sum(seconds)),
        "mixtures_per_second": n / elapsed,
        "workers": workers,
        "snr_db": _stats(snrs),
        "noisy_rms_dbfs": _stats(levels),
        "max_peak": float(np.max(peaks)),
        "reverb_share": reverb / n,
        "skipped_files": sorted(set(skipped)),
    }


def format_summary(s: dict) -> str:
    snr, lvl = s["snr_db"], s["noisy_rms_dbfs"]
    lines = [
        f"sources          {s['speech_files']} speech, {s['noise_files']} noise, {s['rir_files']} RIR files",
        f"mixtures         {s['mixtures']} ({s['audio_seconds'] / 60:.1f} min of audio)",
        f"speed            {s['mixtures_per_second']:.1f} mixtures/s with {s['workers']} workers",
        f"SNR (dB)         mean {snr['mean']:.1f}, min {snr['min']:.1f}, max {snr['max']:.1f} ({snr['n']} noisy)",
        f"input level      mean {lvl['mean']:.1f} dBFS, min {lvl['min']:.1f}, max {lvl['max']:.1f}",
        f"max peak         {s['max_peak']:.3f}",
        f"reverberant      {100 * s['reverb_share']:.0f}%",
        f"skipped files    {len(s['skipped_files'])}",
    ]
    lines += [f"  {path}: {reason}" for path, reason in s["skipped_files"][:10]]
    return "\n".join(lines)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "mean": float("nan"), "min": float("nan"), "max": float("nan")}
    v = np.asarray(values)
    return {"n": len(v), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
