"""Audio file I/O for every part of l3se: read anything libsndfile reads as float32 mono 16 kHz.

Reading converts what it can (channels, sample rate, integer/8-bit PCM) and refuses, with an
``AudioError`` that names the file and the reason, what cannot be used (unreadable, empty,
zero-length, NaN/inf, all-silent when asked). Writing is atomic: a temporary file in the same
folder is renamed into place, so an interrupted job never leaves a half-written output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from data_sim.files import atomic_path

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# Peak below which a file counts as digital silence (about -90 dBFS).
SILENCE_PEAK = 3e-5


class AudioError(Exception):
    """A file that cannot be used as audio. ``str(e)`` is 'PATH: reason'."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header-only look at a file: its length is known without decoding it."""
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file")
    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile raises several types for corrupt headers
        raise AudioError(path, f"unreadable ({_short(e)})") from None
    frames = info.frames
    if frames <= 0 or frames > 2**62:  # mp3 headers without a frame count report huge values
        frames = _count_frames(path)
    if frames <= 0:
        raise AudioError(path, "zero-length audio")
    return AudioInfo(frames=frames, sample_rate=info.samplerate, channels=info.channels)


def load_audio(
    path: str | Path,
    sr: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
    reject_silent: bool = False,
) -> np.ndarray:
    """Read ``duration`` seconds from ``offset`` as float32 mono at ``sr``: shape [S].

    Only the requested frames are decoded, so cropping a segment from a long file is cheap.
    """
    data, native_sr = _decode(path, offset, duration)
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if reject_silent and float(np.abs(wav).max()) < SILENCE_PEAK:
        raise AudioError(path, "all-silent audio")
    return np.ascontiguousarray(resample(wav, native_sr, sr), dtype=np.float32)


def load_channels(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The whole file as float32 [C, S] at ``sr``, all-silent channels left out (an error when
    every channel is). For multichannel RIRs: each channel is one microphone's response, and
    their average smears the direct path that the microphones receive at different delays."""
    data, native_sr = _decode(path, 0.0, None)
    data = data[:, np.abs(data).max(axis=0) >= SILENCE_PEAK]
    if not data.size:
        raise AudioError(path, "all-silent audio")
    return np.ascontiguousarray(resample(data, native_sr, sr).T, dtype=np.float32)


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of a signal [S] or [S, C] (soxr, high quality)."""
    if sr_in == sr_out:
        return wav
    return soxr.resample(wav.astype(np.float32, copy=False), sr_in, sr_out, quality="HQ")


def write_audio(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write a mono float signal as 16-bit PCM, atomically."""
    path = Path(path)
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"write_audio expects a mono signal [S], got shape {wav.shape}")
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16", format=fmt)


def _decode(path: str | Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    """``duration`` seconds (None: to the end) from ``offset``: float32 [S, C] at the file's own
    rate, and that rate."""
    path = str(path)
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file")
    try:
        with sf.SoundFile(path) as f:
            native_sr = f.samplerate
            start = int(round(offset * native_sr))
            frames = -1 if duration is None else int(round(duration * native_sr))
            if start:
                f.seek(start)
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(path, f"unreadable ({_short(e)})") from None
    if data.size == 0:
        raise AudioError(path, "zero-length audio")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or infinite samples")
    return data, native_sr


def _count_frames(path: str | Path) -> int:
    try:
        with sf.SoundFile(str(path)) as f:
            n = 0
            while True:
                block = f.read(frames=1 << 16, dtype="float32", always_2d=True)
                if not len(block):
                    return n
                n += len(block)
    except Exception as e:
        raise AudioError(path, f"unreadable ({_short(e)})") from None


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return msg[-1] if msg else type(e).__name__
