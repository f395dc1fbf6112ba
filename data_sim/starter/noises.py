"""Procedural noise: each kind is a seeded function ``(rng, seconds, sr) -> float32 [S]``.

Kinds: coloured noise (white, pink, brown, blue), babble (several espeak-ng talkers at once),
hum (mains hum, fans and engines with drifting tones), impulsive (clicks, door knocks,
typing), music (chords and arpeggios of additive-synthesis notes) and modulated (amplitude-
modulated noise, sirens, alarms). Every clip is scaled to an RMS of ``TARGET_RMS_DB`` unless
that would push its peak past ``MAX_PEAK``, in which case the peak sets the scale.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

from data_sim.audio import SAMPLE_RATE
from data_sim.starter.text import SentenceGenerator
from data_sim.starter.tts import ESPEAK_ACCENTS, ESPEAK_VARIANTS, Voice, synthesize

TARGET_RMS_DB = -20.0
MAX_PEAK = 0.9
# Coloured noise is flat below this frequency (Hz), so brown noise is not all sub-audible rumble.
COLOUR_FLOOR_HZ = 20.0

NoiseFn = Callable[[np.random.Generator, float, int], np.ndarray]


def white(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    return _normalise(_coloured(rng, int(seconds * sr), sr, 0.0))


def pink(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Power spectral density ~ 1/f: -3 dB per octave."""
    return _normalise(_coloured(rng, int(seconds * sr), sr, -1.0))


def brown(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Power spectral density ~ 1/f^2: -6 dB per octave."""
    return _normalise(_coloured(rng, int(seconds * sr), sr, -2.0))


def blue(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Power spectral density ~ f: +3 dB per octave."""
    return _normalise(_coloured(rng, int(seconds * sr), sr, 1.0))


def babble(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """4-10 espeak-ng talkers reading generated sentences, each at its own level."""
    n = int(seconds * sr)
    out = np.zeros(n, np.float32)
    for _ in range(int(rng.integers(4, 11))):
        voice = Voice(
            "espeak-ng",
            f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(ESPEAK_VARIANTS)}",
            pitch=float(rng.uniform(-4, 4)),
            rate=float(rng.uniform(0.85, 1.25)),
        )
        sentences = SentenceGenerator(int(rng.integers(2**31)))
        # ~2.5 words/s: enough text for the clip plus a random start offset, in one call.
        words, text = 0, []
        while words < 3.5 * seconds + 10:
            s = next(sentences)
            words += s.n_words
            text.append(s.text)
        talker = synthesize(voice, " ".join(text), sr)
        if len(talker) < n:
            talker = np.tile(talker, n // len(talker) + 1)
        start = int(rng.integers(0, len(talker) - n + 1))
        talker = talker[start : start + n]
        out += talker / (_rms(talker) + 1e-8) * 10 ** (rng.uniform(-6, 0) / 20)
    return _normalise(out)


def hum(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mains hum (50/60 Hz and harmonics), a fan or an engine; tones drift slowly."""
    n = int(seconds * sr)
    source = rng.choice(["mains", "fan", "engine"])
    if source == "mains":
        f0 = rng.choice([50.0, 60.0]) * _drift(rng, n, sr, depth=0.003, rate_hz=0.2)
        k = np.arange(1, 25)
        # Transformer buzz: even harmonics (2*f0) carry as much as the fundamental.
        amps = k ** -rng.uniform(0.6, 1.5) * np.where(k % 2 == 0, rng.uniform(1, 3), 1.0)
        x = _harmonics(rng, f0, amps, sr) + _coloured(rng, n, sr, -1.0) * 10 ** (-35 / 20)
    elif source == "fan":
        blade_hz = rng.uniform(40, 250) * _drift(rng, n, sr, depth=0.02, rate_hz=0.1)
        tones = _harmonics(rng, blade_hz, rng.uniform(0.2, 1, 6) / np.arange(1, 7), sr)
        air = _bandpass(_coloured(rng, n, sr, -1.0), sr, 60, rng.uniform(2000, 7000))
        x = air / _rms(air) + tones / _rms(tones) * 10 ** (rng.uniform(-12, 0) / 20)
    else:
        firing_hz = rng.uniform(20, 90) * _drift(rng, n, sr, depth=0.08, rate_hz=0.15)
        k = np.arange(1, 40)
        tones = _harmonics(
            rng, firing_hz, k ** -rng.uniform(0.5, 1.2) * rng.uniform(0.3, 1, k.size), sr
        )
        rumble = _bandpass(_coloured(rng, n, sr, -2.0), sr, 30, 1500)
        x = tones / _rms(tones) + rumble / _rms(rumble) * 10 ** (rng.uniform(-15, -3) / 20)
    return _normalise(x)


def impulsive(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Clicks, door knocks or typing: sparse transients over a faint noise floor."""
    n = int(seconds * sr)
    x = _coloured(rng, n, sr, -1.0) * 10 ** (rng.uniform(-70, -50) / 20)
    source = rng.choice(["clicks", "knocks", "typing"])
    t = rng.uniform(0, 0.5)
    while t < seconds:
        if source == "clicks":
            event = _decay_noise(rng, sr, tau_s=rng.uniform(0.0003, 0.003))
            t_next = t + rng.exponential(1 / rng.uniform(1, 8))
        elif source == "knocks":
            event = _knocks(rng, sr)
            t_next = t + len(event) / sr + rng.uniform(0.8, 3.0)
        else:
            event = _keystroke(rng, sr)
            # Words of 2-8 keys at 6-12 keys/s, then a pause.
            t_next = t + (rng.uniform(0.3, 1.2) if rng.random() < 0.2 else rng.uniform(0.08, 0.17))
        _add(x, event * rng.uniform(0.3, 1.0), int(t * sr))
        t = t_next
    return _normalise(x)


def music(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A chord progression played as block chords or arpeggios, with a bass line."""
    n = int(seconds * sr)
    x = np.zeros(n, np.float32)
    beat = 60.0 / rng.uniform(70, 160)
    root = int(rng.integers(45, 60))  # MIDI note of the key
    scale = [0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10]
    progression = [[0, 3, 4, 0], [0, 5, 3, 4], [0, 4, 5, 3], [1, 4, 0, 0], [5, 3, 0, 4]]
    degrees = progression[int(rng.integers(len(progression)))]
    timbre = (int(rng.integers(1, 9)), rng.uniform(0.8, 2.0), rng.uniform(0.3, 2.0))
    arpeggio = rng.random() < 0.5
    t, bar = 0.0, 0
    while t < seconds:
        degree = degrees[bar % len(degrees)]
        chord = [root + 12 + scale[(degree + i) % 7] + 12 * ((degree + i) // 7) for i in (0, 2, 4)]
        if arpeggio:
            pattern = chord + [chord[1] + 12 * int(rng.random() < 0.5)]
            for i in range(8):
                note = pattern[i % len(pattern)]
                _add(
                    x,
                    _note(_midi_hz(note), beat / 2 * 1.5, sr, timbre),
                    int((t + i * beat / 2) * sr),
                )
        else:
            for i in range(4):
                for note in chord:
                    _add(
                        x,
                        0.6 * _note(_midi_hz(note), beat * 0.9, sr, timbre),
                        int((t + i * beat) * sr),
                    )
        bass = (2, 1.5, 1.0)
        _add(x, 1.5 * _note(_midi_hz(root - 12 + scale[degree]), beat * 3.5, sr, bass), int(t * sr))
        t += 4 * beat
        bar += 1
    return _normalise(x)


def modulated(rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Amplitude-modulated band noise, a siren (wail, yelp or hi-lo) or a beeping alarm."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    source = rng.choice(["am_noise", "siren", "alarm"])
    if source == "am_noise":
        centre = rng.uniform(200, 3000)
        band = _bandpass(_coloured(rng, n, sr, 0.0), sr, centre / 1.5, min(centre * 1.5, 0.45 * sr))
        depth = rng.uniform(0.5, 1.0)
        x = band * (
            1 + depth * np.sin(2 * np.pi * rng.uniform(0.5, 12) * t + rng.uniform(0, 2 * np.pi))
        )
    elif source == "siren":
        lo, hi = rng.uniform(500, 800), rng.uniform(1100, 1700)
        style = rng.choice(["wail", "yelp", "hilo"])
        if style == "hilo":
            f = np.where((t / rng.uniform(0.4, 0.7)).astype(int) % 2 == 0, lo, hi)
        else:
            period = rng.uniform(3, 6) if style == "wail" else rng.uniform(0.15, 0.4)
            f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
        x = _harmonics(rng, f, np.array([1.0, 0.5, 0.3, 0.15]), sr)
        x = x + _coloured(rng, n, sr, -1.0) * _rms(x) * 10 ** (-30 / 20)
    else:
        tone = _harmonics(rng, np.full(n, rng.uniform(800, 3500)), np.array([1.0, 0.3, 0.1]), sr)
        on, off = rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.8)
        gate = (t % (on + off)) < on
        x = tone * signal.lfilter(
            [0.01], [1, -0.99], gate.astype(np.float64)
        )  # 100-sample attack/release
    return _normalise(x)


NOISE_KINDS: dict[str, NoiseFn] = {
    "white": white,
    "pink": pink,
    "brown": brown,
    "blue": blue,
    "babble": babble,
    "hum": hum,
    "impulsive": impulsive,
    "music": music,
    "modulated": modulated,
}


def generate_noise(
    kind: str, rng: np.random.Generator, seconds: float, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """One clip of ``kind``: float32 [round(seconds*sr)]."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
    return NOISE_KINDS[kind](rng, seconds, sr).astype(np.float32)


def _coloured(rng: np.random.Generator, n: int, sr: int, exponent: float) -> np.ndarray:
    """Gaussian noise [n] with power spectral density ~ f**exponent (flat below the floor)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / sr), COLOUR_FLOOR_HZ)
    spectrum *= f ** (exponent / 2)
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    return x / _rms(x)


def _harmonics(rng: np.random.Generator, f0: np.ndarray, amps: np.ndarray, sr: int) -> np.ndarray:
    """Sum of harmonics k*f0(t) with amplitudes ``amps`` [K], random phases; f0 in Hz, [S]."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(len(f0))
    for k, a in enumerate(amps, start=1):
        if k * np.max(f0) < 0.45 * sr:
            out += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _drift(rng: np.random.Generator, n: int, sr: int, depth: float, rate_hz: float) -> np.ndarray:
    """A slowly wandering factor around 1: [n], relative deviation about ``depth``."""
    n_knots = max(int(n / sr * rate_hz) + 2, 2)
    knots = rng.standard_normal(n_knots) * depth
    return 1 + np.interp(np.linspace(0, n_knots - 1, n), np.arange(n_knots), knots)


def _bandpass(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    sos = signal.butter(4, [lo, min(hi, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _decay_noise(rng: np.random.Generator, sr: int, tau_s: float) -> np.ndarray:
    t = np.arange(int(6 * tau_s * sr) + 1) / sr
    return rng.standard_normal(len(t)) * np.exp(-t / tau_s)


def _knocks(rng: np.random.Generator, sr: int) -> np.ndarray:
    """2-4 knocks on a door: damped low resonances with a short contact transient."""
    gap = rng.uniform(0.12, 0.25)
    count = int(rng.integers(2, 5))
    out = np.zeros(int((gap * count + 0.2) * sr))
    freqs, tau = rng.uniform(80, 300, 3), rng.uniform(0.02, 0.06)
    t = np.arange(int(6 * tau * sr)) / sr
    body = sum(np.sin(2 * np.pi * f * t) * rng.uniform(0.3, 1) for f in freqs) * np.exp(-t / tau)
    for i in range(count):
        knock = body.copy()
        contact = _decay_noise(rng, sr, 0.001)
        knock[: len(contact)] += 0.5 * contact
        _add(out, knock * rng.uniform(0.7, 1.0), int(i * gap * sr))
    return out


def _keystroke(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A key press: a bright click followed by a short resonant 'thock'."""
    click = _bandpass(_decay_noise(rng, sr, rng.uniform(0.0005, 0.0015)), sr, 2000, 7000)
    tau = rng.uniform(0.01, 0.03)
    t = np.arange(int(6 * tau * sr)) / sr
    thock = (
        np.sin(2 * np.pi * rng.uniform(1000, 3000) * t) * np.exp(-t / tau) * rng.uniform(0.1, 0.4)
    )
    thock[: len(click)] += click / (np.abs(click).max() + 1e-8)
    return thock


def _note(freq: float, dur: float, sr: int, timbre: tuple[int, float, float]) -> np.ndarray:
    """An additive-synthesis note [S]: ``timbre`` = (harmonics, spectral tilt, decay rate 1/s)."""
    n_harm, tilt, decay = timbre
    t = np.arange(int(dur * sr)) / sr
    k = np.arange(1, n_harm + 1)
    k = k[k * freq < 0.45 * sr]
    tone = (np.sin(2 * np.pi * freq * np.outer(k, t)) * (k**-tilt)[:, None]).sum(axis=0)
    attack = np.minimum(t / 0.01, 1.0)
    release = np.clip((dur - t) / 0.05, 0.0, 1.0)
    return tone * attack * release * np.exp(-decay * t)


def _midi_hz(note: int) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _add(out: np.ndarray, event: np.ndarray, start: int) -> None:
    """Add ``event`` into ``out`` at sample ``start``, cutting what runs past the end."""
    if start >= len(out):
        return
    stop = min(len(out), start + len(event))
    out[start:stop] += event[: stop - start]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    scale = min(
        10 ** (TARGET_RMS_DB / 20) / (_rms(x) + 1e-12), MAX_PEAK / (np.abs(x).max() + 1e-12)
    )
    return (x * scale).astype(np.float32)
