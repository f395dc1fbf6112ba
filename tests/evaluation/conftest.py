"""Shared fixtures: clear synthetic speech with known text (flite) and a tiny eval set."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data_sim.audio import load_audio, write_audio

SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "please call her and ask her to bring these things with her from the store",
    "the weather is nice today so we can go for a walk",
)


def synthesize(text: str, path: Path) -> np.ndarray:
    """flite's slt voice, slowed by 20%, at 16 kHz: float32 [S]."""
    if shutil.which("flite") is None:
        pytest.skip("flite not installed")
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["flite", "-voice", "slt", "--setf", "duration_stretch=1.2", "-t", text, "-o", str(raw)], check=True,
                   capture_output=True)
    wav = load_audio(raw)
    raw.unlink()
    return wav


def mix_at_snr(clean: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(clean)).astype(np.float32)
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return clean + gain * noise


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> list[tuple[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("tts")
    return [(t, synthesize(t, folder / f"s{i}.wav")) for i, t in enumerate(SENTENCES)]


@pytest.fixture(scope="session")
def evalset(tmp_path_factory, speech) -> Path:
    """Manifest with subsets 'general' (2 items) and 'low' (1 item), like `l3se data evalset`."""
    root = tmp_path_factory.mktemp("evalset")
    rows = []
    for i, ((text, clean), subset, snr) in enumerate(zip(speech, ("general", "general", "low"),
                                                        (10.0, 4.0, -3.0))):
        uid = f"utt{i}"
        write_audio(root / subset / "clean" / f"{uid}.wav", clean)
        write_audio(root / subset / "noisy" / f"{uid}.wav", mix_at_snr(clean, snr, i) * 0.5)
        rows.append({"id": uid, "subset": subset, "noisy": f"{subset}/noisy/{uid}.wav",
                     "clean": f"{subset}/clean/{uid}.wav", "snr_db": snr, "reverb": False,
                     "text": text.upper(), "speaker": "slt", "duration": len(clean) / 16000})
    manifest = root / "evalset.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
