"""Speech from the Debian text-to-speech programs: espeak-ng, flite and festival.

A *voice* (one synthetic speaker) is an engine, one of its voices, a pitch shift and a speaking
rate. espeak-ng shifts pitch natively. flite and festival voices have no reliable pitch control,
so their pitch shift is done by resampling, which moves pitch and formants together (as in
vocal-tract-length perturbation); their native rate control is set so that the final speaking
rate still equals ``rate``.

Output is float32 mono at 16 kHz. ``finish`` trims leading/trailing silence to a natural margin
and peak-normalises to a random level.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

from data_sim.audio import SAMPLE_RATE, resample

ENGINES = ("espeak-ng", "flite", "festival")
_PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}

ESPEAK_ACCENTS = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
# espeak-ng voice variants that sound like a person rather than a robot or a whisper.
ESPEAK_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "Andy",
    "Annie",
    "Alex",
    "Denis",
    "ed",
    "edward",
    "john",
    "Lee",
    "linda",
    "Michael",
    "Mike",
    "paul",
    "rob",
    "robert",
    "steph",
    "anika",
    "david",
    "max",
)
FESTIVAL_VOICES = ("cmu_us_slt_arctic_hts", "kal_diphone")
# espeak-ng: default words per minute, and pitch-parameter steps per semitone (measured: -p 50 ->
# 101 Hz, -p 70 -> 123 Hz for en-us).
_ESPEAK_WPM = 175
_ESPEAK_PITCH_PER_SEMITONE = 5.9
_TIMEOUT_S = 120


class TTSError(RuntimeError):
    """A synthesis that failed; the message names the engine, the voice and the engine's error."""


@dataclass(frozen=True)
class Voice:
    engine: str  # one of ENGINES
    name: str  # the engine's voice: "en-gb-x-rp+f2", "slt", "cmu_us_slt_arctic_hts"
    pitch: float = 0.0  # shift from the voice's own pitch, semitones
    rate: float = 1.0  # speaking-rate factor, 1.0 = the voice's own

    def describe(self) -> dict:
        return asdict(self)


def available_engines(engines: list[str] | tuple[str, ...] = ENGINES) -> list[str]:
    """The requested engines whose program is installed; warns about each one that is not."""
    found = []
    for engine in engines:
        if engine not in _PROGRAMS:
            raise ValueError(f"unknown TTS engine {engine!r}; known: {', '.join(ENGINES)}")
        if shutil.which(_PROGRAMS[engine]) is None:
            warnings.warn(
                f"TTS engine {engine} skipped: program {_PROGRAMS[engine]!r} is not installed",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            found.append(engine)
    return found


@cache
def base_voices(engine: str) -> tuple[str, ...]:
    """The engine's voice names that speakers are made from."""
    if engine == "espeak-ng":
        return tuple(f"{a}+{v}" for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS)
    if engine == "flite":
        listed = _run("flite", ["flite", "-lv"]).decode().split(":", 1)[-1].split()
        # "*_time" voices only speak clock times; kal16 is kal at 16 kHz, the same speaker.
        names = [v for v in listed if not v.endswith("_time")]
        return tuple(v for v in names if not (v == "kal" and "kal16" in names))
    if engine == "festival":
        return FESTIVAL_VOICES
    raise ValueError(f"unknown TTS engine {engine!r}; known: {', '.join(ENGINES)}")


def synthesize(voice: Voice, text: str, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Speak ``text`` with ``voice``: float32 mono [S] at ``sr``, untrimmed."""
    shift = 2.0 ** (voice.pitch / 12.0) if voice.engine != "espeak-ng" else 1.0
    with tempfile.TemporaryDirectory(prefix="l3se-tts-") as tmp:
        wav_path = Path(tmp) / "out.wav"
        _run(voice.engine, _command(voice, text, wav_path, voice.rate / shift), wav_path)
        try:
            wav, native_sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
        except Exception as e:
            raise TTSError(f"{voice.engine} ({voice.name}): unreadable output: {e}") from None
    if len(wav) == 0 or not np.abs(wav).max() > 0:
        raise TTSError(f"{voice.engine} ({voice.name}): produced no audio for {text!r}")
    # Declaring a higher input rate than the true one shifts every frequency up by `shift`.
    return resample(wav.mean(axis=1), round(native_sr * shift), sr)


def finish(
    wav: np.ndarray,
    rng: np.random.Generator,
    sr: int = SAMPLE_RATE,
    margin_s: tuple[float, float] = (0.1, 0.3),
    peak_db: tuple[float, float] = (-10.0, -1.0),
) -> np.ndarray:
    """Trim silence to a random margin (s) at each end, then peak-normalise to a random level."""
    frame = int(0.01 * sr)
    n = len(wav) // frame
    energy = (wav[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    active = np.flatnonzero(energy > energy.max() * 10 ** (-45 / 10))
    start, stop = active[0] * frame, (active[-1] + 1) * frame
    lead, trail = (int(rng.uniform(*margin_s) * sr) for _ in range(2))
    # Digital silence pads a margin the synthesiser did not leave.
    out = np.concatenate(
        [
            np.zeros(max(0, lead - start), np.float32),
            wav[max(0, start - lead) : stop + trail],
            np.zeros(max(0, stop + trail - len(wav)), np.float32),
        ]
    )
    peak = 10 ** (rng.uniform(*peak_db) / 20)
    return (out * (peak / np.abs(out).max())).astype(np.float32)


def _command(voice: Voice, text: str, wav_path: Path, rate: float) -> list[str]:
    if voice.engine == "espeak-ng":
        pitch = int(np.clip(round(50 + _ESPEAK_PITCH_PER_SEMITONE * voice.pitch), 0, 99))
        wpm = round(_ESPEAK_WPM * rate)
        return [
            "espeak-ng",
            "-v",
            voice.name,
            "-s",
            str(wpm),
            "-p",
            str(pitch),
            "-w",
            str(wav_path),
            "--",
            text,
        ]
    if voice.engine == "flite":
        return [
            "flite",
            "-voice",
            voice.name,
            "--setf",
            f"duration_stretch={1 / rate:.4f}",
            "-t",
            text,
            "-o",
            str(wav_path),
        ]
    if voice.engine == "festival":
        text_path = wav_path.with_suffix(".txt")
        text_path.write_text(text + "\n")
        if voice.name.endswith("_hts"):  # HTS voices ignore Duration_Stretch; hts_engine's -r works
            speed = (
                f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {rate:.4f}))))'
            )
        else:
            speed = f"(Parameter.set 'Duration_Stretch {1 / rate:.4f})"
        return [
            "text2wave",
            "-eval",
            f"(voice_{voice.name})",
            "-eval",
            speed,
            str(text_path),
            "-o",
            str(wav_path),
        ]
    raise ValueError(f"unknown TTS engine {voice.engine!r}; known: {', '.join(ENGINES)}")


def _run(engine: str, cmd: list[str], output: Path | None = None) -> bytes:
    """Run a TTS program; any failure becomes a TTSError naming the engine."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise TTSError(f"{engine}: program {cmd[0]!r} is not installed") from None
    except subprocess.TimeoutExpired:
        raise TTSError(
            f"{engine}: no result after {_TIMEOUT_S} s ({' '.join(cmd[:3])} ...)"
        ) from None
    err = proc.stderr.decode(errors="replace").strip()
    # festival reports errors (an unknown voice, say) on stderr but still exits with 0.
    failed = proc.returncode != 0 or "SIOD ERROR" in err or "Error" in err
    if failed or (output is not None and not output.is_file()):
        detail = err.splitlines()[-1] if err else f"exit status {proc.returncode}, no output file"
        raise TTSError(f"{engine}: {' '.join(cmd[:3])} ... failed: {detail}")
    return proc.stdout
