"""Shared fixtures: small synthetic audio made on the fly (no downloads)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_sim.audio import write_audio

SR = 16000


def speech_like(rng: np.random.Generator, seconds: float, sr: int = SR) -> np.ndarray:
    """Voiced bursts (harmonics with a moving pitch) separated by pauses: has silent parts."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    gate = (np.sin(2 * np.pi * 2.0 * t + rng.uniform(0, 6)) > -0.3).astype(float)
    return (0.3 * x * gate).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, rt60: float = 0.4, sr: int = SR) -> np.ndarray:
    """Exponentially decaying noise tail after a delayed direct path."""
    n = int(rt60 * sr)
    delay = int(rng.integers(20, 200))
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
    rir = np.zeros(delay + n, dtype=np.float32)
    rir[delay] = 1.0
    rir[delay + 1 :] += tail[: n - 1]
    return rir


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: thread synchronisation costs more than it saves
    (decoding ran 10x slower with 2 threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def corpus(tmp_path):
    """A tiny corpus: 6 utterances (JSONL + LibriSpeech tree), 3 noises, 3 RIRs."""
    rng = np.random.default_rng(0)
    speech_rows = []
    for i in range(6):
        spk, chap = 100 + i % 2, 7
        uid = f"{spk}-{chap}-{i:04d}"
        d = tmp_path / "speech" / str(spk) / str(chap)
        path = d / f"{uid}.flac"
        write_audio(path, speech_like(rng, 3.0 + i * 0.5))
        with open(d / f"{spk}-{chap}.trans.txt", "a") as f:
            f.write(f"{uid} HELLO WORLD NUMBER {i}\n")
        speech_rows.append({"id": uid, "path": str(path), "text": f"HELLO WORLD NUMBER {i}",
                            "speaker": str(spk)})
    (tmp_path / "speech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in speech_rows))
    for i in range(3):
        write_audio(tmp_path / "noise" / f"noise_{i}.wav",
                    (0.1 * rng.standard_normal(SR * (2 + 3 * i))).astype(np.float32))
        write_audio(tmp_path / "rir" / f"rir_{i}.wav", synthetic_rir(rng, 0.3 + 0.2 * i))
    return tmp_path
