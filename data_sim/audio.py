"""Audio file I/O for every part of l3se: read anything libsndfile reads as float32 mono 16 kHz.

Reading converts what it can (channels, sample rate, integer/8-bit PCM) and refuses, with an
``AudioError`` that names the file and the reason, what cannot be used (unreadable, empty,
zero-length, NaN/inf, all-silent when asked). Writing is atomic: a temporary file in the same
folder is renamed into place, so an interrupted job never leaves a half-written output.

Audio can also be a byte range of a file (``byte_range=(offset, size)``): an uncompressed tar
member's data, read into memory and decoded from there (tar shards, ``data_sim.shards``).
"""

from __future__ import annotations

import io
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


def location(path: str | Path, byte_range: tuple[int, int] | None = None) -> str:
    """How errors and caches name audio: the path, or ``PATH@OFFSET`` for a byte range."""
    return str(path) if byte_range is None else f"{path}@{byte_range[0]}"


def read_range(path: str | Path, byte_range: tuple[int, int]) -> bytes:
    """The ``size`` bytes at ``offset`` of ``path`` (``byte_range=(offset, size)``)."""
    offset, size = byte_range
    where = location(path, byte_range)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except FileNotFoundError:
        raise AudioError(where, "file not found") from None
    except OSError as e:
        raise AudioError(where, f"unreadable ({e.strerror or e})") from None
    if not data:
        raise AudioError(where, "empty file")
    if len(data) < size:
        raise AudioError(where, f"truncated ({len(data)} of {size} bytes)")
    return data


def audio_info(path: str | Path, byte_range: tuple[int, int] | None = None) -> AudioInfo:
    """Header-only look at a file (or a byte range of one): its length is known without
    decoding it."""
    where = location(path, byte_range)
    source = _open(path, byte_range)
    try:
        info = sf.info(source)
    except Exception as e:  # libsndfile raises several types for corrupt headers
        raise AudioError(where, f"unreadable ({_short(e)})") from None
    frames = info.frames
    if frames <= 0 or frames > 2**62:  # mp3 headers without a frame count report huge values
        frames = _count_frames(_rewound(source), where)
    if frames <= 0:
        raise AudioError(where, "zero-length audio")
    return AudioInfo(frames=frames, sample_rate=info.samplerate, channels=info.channels)


def load_audio(
    path: str | Path,
    sr: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
    reject_silent: bool = False,
    byte_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read ``duration`` seconds from ``offset`` as float32 mono at ``sr``: shape [S].

    Only the requested frames are decoded (for MP3, those up to the crop's end), so cropping a
    segment from a long file is cheap. ``byte_range``: the audio is that range of ``path``.
    """
    data, native_sr = decode(path, offset, duration, byte_range)
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if reject_silent and float(np.abs(wav).max()) < SILENCE_PEAK:
        raise AudioError(location(path, byte_range), "all-silent audio")
    return np.ascontiguousarray(resample(wav, native_sr, sr), dtype=np.float32)


def load_channels(
    path: str | Path, sr: int = SAMPLE_RATE, byte_range: tuple[int, int] | None = None
) -> np.ndarray:
    """The whole file as float32 [C, S] at ``sr``, all-silent channels left out (an error when
    every channel is). For multichannel RIRs: each channel is one microphone's response, and
    their average smears the direct path that the microphones receive at different delays."""
    data, native_sr = decode(path, 0.0, None, byte_range)
    data = data[:, np.abs(data).max(axis=0) >= SILENCE_PEAK]
    if not data.size:
        raise AudioError(location(path, byte_range), "all-silent audio")
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


def flac_bytes(data: np.ndarray, sr: int) -> bytes:
    """A signal [S] or [S, C] as a 16-bit FLAC file's bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(data, -1.0, 1.0), sr, subtype="PCM_16", format="FLAC")
    return buf.getvalue()


def decode(
    path: str | Path,
    offset: float = 0.0,
    duration: float | None = None,
    byte_range: tuple[int, int] | None = None,
) -> tuple[np.ndarray, int]:
    """``duration`` seconds (None: to the end) from ``offset``: float32 [S, C] at the file's own
    rate, and that rate. ``byte_range``: the audio is that range of ``path``."""
    where = location(path, byte_range)
    source = _open(path, byte_range)
    try:
        with sf.SoundFile(source) as f:
            native_sr = f.samplerate
            start = int(round(offset * native_sr))
            frames = -1 if duration is None else int(round(duration * native_sr))
            if f.format == "MP3":
                # libsndfile 1.2.2's MP3 reader returns wrong samples after a seek and for
                # about 0.3 s after each read that does not start at frame 0, so MP3 is decoded
                # in one read from the start and the crop's head dropped.
                data = f.read(frames=-1 if frames < 0 else start + frames, dtype="float32",
                              always_2d=True)[start:]
            else:
                if start:
                    f.seek(start)
                data = f.read(frames=frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(where, f"unreadable ({_short(e)})") from None
    if data.size == 0:
        raise AudioError(where, "zero-length audio")
    if not np.isfinite(data).all():
        raise AudioError(where, "contains NaN or infinite samples")
    return data, native_sr


def _open(path: str | Path, byte_range: tuple[int, int] | None) -> str | io.BytesIO:
    """What soundfile opens: the path of a non-empty file, or the range's bytes in memory."""
    if byte_range is not None:
        return io.BytesIO(read_range(path, byte_range))
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty file")
    return str(path)


def _rewound(source: str | io.BytesIO) -> str | io.BytesIO:
    if isinstance(source, io.BytesIO):
        source.seek(0)
    return source


def _count_frames(source: str | io.BytesIO, where: str) -> int:
    try:
        with sf.SoundFile(source) as f:
            n = 0
            while True:
                block = f.read(frames=1 << 16, dtype="float32", always_2d=True)
                if not len(block):
                    return n
                n += len(block)
    except Exception as e:
        raise AudioError(where, f"unreadable ({_short(e)})") from None


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    if not msg:
        return type(e).__name__
    # Audio read into memory is "<_io.BytesIO object at 0x...>" to libsndfile: not a name.
    head, sep, reason = msg[-1].partition(">: ")
    return reason if sep and "BytesIO" in head else msg[-1]
