"""Noisy/reverberant mixture simulation (the paper's on-the-fly recipe, section 4.1).

Per example: with probability ``p_reverb`` convolve the clean utterance with a random RIR (one
random channel of a multichannel one), mix a random noise clip at an SNR drawn uniformly from
``snr_range`` (powers measured on active frames), randomise the level and protect against
clipping, applying the same gain to input and target. The target is the dry clean signal (paper)
or its early reverberation.

All randomness comes from the ``numpy.random.Generator`` passed in, so a caller that derives it
from (seed, epoch, index) gets the same mixture in any process.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import fft as sp_fft

from data_sim.audio import SAMPLE_RATE, AudioError, load_audio, load_channels
from data_sim.index import CorpusIndex
from data_sim.sources import AudioItem

log = logging.getLogger(__name__)

FRAME = 320  # 20 ms at 16 kHz: the unit of the activity measure


@dataclass
class DistortionConfig:
    """Extra input-only distortions through audiomentations; each applied with its probability."""

    p_band_limit: float = 0.0
    band_limit_hz: tuple[float, float] = (2000.0, 7000.0)  # low-pass cutoff range
    p_clipping: float = 0.0
    clipping_percentile: tuple[float, float] = (0.0, 20.0)
    p_gain: float = 0.0
    gain_db: tuple[float, float] = (-6.0, 6.0)
    # A microphone's or a line's colouring: a 7-band parametric EQ within +-colour_gain_db, and
    # (drawn on its own, with the same probability) a low cut somewhere in low_cut_hz.
    p_colour: float = 0.0
    colour_gain_db: float = 6.0
    low_cut_hz: tuple[float, float] = (50.0, 300.0)

    @property
    def enabled(self) -> bool:
        return max(self.p_band_limit, self.p_clipping, self.p_gain, self.p_colour) > 0


@dataclass
class MixConfig:
    sample_rate: int = SAMPLE_RATE
    # Length of the random crop in seconds; None keeps whole utterances (and their transcripts).
    segment_seconds: float | None = 4.0
    # The paper's range was lost from the seed text; URGENT 2025 uses -5..20 dB.
    snr_range: tuple[float, float] = (-5.0, 20.0)
    p_noise: float = 1.0
    p_reverb: float = 0.5
    reverb_target: Literal["dry", "early"] = "dry"
    early_ms: float = 50.0
    # RMS level (dBFS, active frames) of the noisy input after randomisation.
    level_range_db: tuple[float, float] = (-35.0, -15.0)
    peak_limit: float = 0.99
    # A frame is active when its energy is within this many dB of the loudest frame.
    active_db: float = 40.0
    distortions: DistortionConfig = field(default_factory=DistortionConfig)

    def __post_init__(self):
        if self.snr_range[0] > self.snr_range[1]:
            raise ValueError(f"snr_range {self.snr_range} is not (low, high)")
        for name in ("p_noise", "p_reverb"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.segment_seconds is not None and self.segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be positive, got {self.segment_seconds}")

    @classmethod
    def clean_only(cls, **kwargs) -> MixConfig:
        """No noise, no reverb, no distortions: noisy == clean (codec and s2t stages)."""
        return cls(p_noise=0.0, p_reverb=0.0, **kwargs)


@dataclass
class Mixture:
    """One simulated example; all arrays float32 [S] and time-aligned."""

    noisy: np.ndarray
    target: np.ndarray
    speech: np.ndarray  # the speech component of ``noisy`` (reverberant when reverb is on)
    noise: np.ndarray  # the noise component of ``noisy`` (zeros when no noise)
    snr_db: float | None
    reverb: bool
    noise_id: str | None = None
    rir_id: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def active_power(x: np.ndarray, active_db: float = 40.0) -> float:
    """Mean power over 20 ms frames within ``active_db`` of the loudest frame (silence ignored)."""
    n = len(x) // FRAME
    if n == 0:
        return float(np.dot(x, x) / max(len(x), 1))
    frames = x[: n * FRAME].reshape(n, FRAME)
    energy = np.einsum("ij,ij->i", frames, frames) / FRAME
    peak = energy.max()
    if peak <= 0:
        return 0.0
    return float(energy[energy >= peak * 10 ** (-active_db / 10)].mean())


@dataclass
class RirSpectra:
    """An RIR prepared for fast convolution: spectra at size ``nfft`` of the direct-path-normalised
    RIR (and of its early part when that is the target), valid for every signal of up to
    ``nfft - length + 1`` samples."""

    full: np.ndarray
    early: np.ndarray | None
    direct: int
    length: int
    nfft: int

    @staticmethod
    def fft_size(n: int, rir_length: int) -> int:
        """The size used for signals of ``n`` samples; shared by many ``n``, so one cached
        spectrum serves utterances of different lengths."""
        return _fft_size(n + rir_length - 1)

    @classmethod
    def prepare(
        cls, rir: np.ndarray, nfft: int, early_ms: float | None = None, sr: int = SAMPLE_RATE
    ) -> RirSpectra:
        d = int(np.argmax(np.abs(rir)))
        rir = (rir / rir[d]).astype(np.float32)
        early = None
        if early_ms is not None:
            early = sp_fft.rfft(rir[: d + int(early_ms * sr / 1000) + 1], nfft)
        return cls(sp_fft.rfft(rir, nfft), early, d, len(rir), nfft)

    def apply(self, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reverberant, early-or-dry target), both aligned with ``clean`` (no delay)."""
        n, d = len(clean), self.direct
        if n + self.length - 1 > self.nfft:  # the circular convolution would wrap around
            raise ValueError(f"{n} samples do not fit spectra of size {self.nfft}")
        spec = sp_fft.rfft(clean, self.nfft)
        target = clean
        if self.early is not None:
            target = sp_fft.irfft(spec * self.early, self.nfft, overwrite_x=True)[d : d + n]
        spec *= self.full
        return sp_fft.irfft(spec, self.nfft, overwrite_x=True)[d : d + n], target


def reverberate(
    clean: np.ndarray, rir: np.ndarray, target: str = "dry", early_ms: float = 50.0,
    sr: int = SAMPLE_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Reverberant speech and the matching target, both aligned to ``clean`` (no delay).
    The RIR is normalised so its direct path has gain 1: the dry target matches it."""
    nfft = RirSpectra.fft_size(len(clean), len(rir))
    spectra = RirSpectra.prepare(rir, nfft, early_ms if target == "early" else None, sr)
    return spectra.apply(clean.astype(np.float32, copy=False))


def fit_length(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Crop ``x`` at a random offset, or loop it from a random offset, to exactly ``n`` samples."""
    if len(x) >= n:
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start : start + n]
    start = int(rng.integers(0, len(x)))
    reps = -(-(n + start) // len(x))
    return np.tile(x, reps)[start : start + n]


def mix_at_snr(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, active_db: float = 40.0
) -> np.ndarray:
    """Scale ``noise`` so that speech/noise active power is ``snr_db``; returns the scaled noise."""
    ps = active_power(speech, active_db)
    pn = active_power(noise, active_db)
    if pn <= 0 or ps <= 0:
        return np.zeros_like(speech)
    # A float32 scale keeps a float32 product float32 (a float64 scalar would promote it).
    scale = np.float32(np.sqrt(ps / (pn * 10 ** (snr_db / 10))))
    return (noise * scale).astype(np.float32, copy=False)


class Mixer:
    """Turns a clean segment into a :class:`Mixture` with noises and RIRs drawn from its banks.

    RIRs and short noise clips are kept decoded in a bounded LRU cache (they are reused
    constantly); long noise files are read window by window.
    """

    def __init__(
        self,
        cfg: MixConfig,
        noises: list[AudioItem] = (),
        rirs: list[AudioItem] = (),
        cache_mb: float = 512.0,
    ):
        self.cfg = cfg
        # Indexes stay memory-mapped; other banks become lists.
        self.noises = noises if isinstance(noises, CorpusIndex) else list(noises)
        self.rirs = rirs if isinstance(rirs, CorpusIndex) else list(rirs)
        if cfg.p_noise > 0 and not self.noises:
            raise ValueError("p_noise > 0 but no noise files were given")
        if cfg.p_reverb > 0 and not self.rirs:
            raise ValueError("p_reverb > 0 but no RIR files were given")
        # Decoded RIRs/noises and RIR spectra (one per FFT size), least recently used first.
        self._cache: OrderedDict[str, np.ndarray | RirSpectra] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = int(cache_mb * 2**20)
        self._bad: set[str] = set()
        self._augment = None

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> Mixture:
        cfg = self.cfg
        clean = clean.astype(np.float32, copy=False)
        skipped: list[tuple[str, str]] = []
        speech, target, rir_id = clean, clean, None
        if cfg.p_reverb > 0 and rng.random() < cfg.p_reverb:
            picked = self._draw(self.rirs, rng, skipped)
            if picked is not None:
                rir_id, rirs = picked
                rir = rirs[0]
                if len(rirs) > 1:
                    # One microphone of an array recording; mono RIRs draw nothing, so their
                    # mixtures stay what they were.
                    channel = int(rng.integers(len(rirs)))
                    rir_id, rir = f"{rir_id}#ch{channel}", rirs[channel]
                speech, target = self._spectra(rir_id, rir, len(clean)).apply(clean)
        noise, snr_db, noise_id = None, None, None
        if cfg.p_noise > 0 and rng.random() < cfg.p_noise:
            snr = float(rng.uniform(*cfg.snr_range))
            picked = self._draw(self.noises, rng, skipped, n=len(speech))
            if picked is not None:
                noise_id, raw = picked
                noise = mix_at_snr(speech, fit_length(raw, len(speech), rng), snr, cfg.active_db)
                snr_db = snr
        noisy = self._distort(speech if noise is None else speech + noise, rng)
        gain = np.float32(self._level_gain(noisy, target, rng))
        return Mixture(
            noisy=noisy * gain,
            target=target * gain,
            speech=speech * gain,
            noise=np.zeros_like(speech) if noise is None else noise * gain,
            snr_db=snr_db,
            reverb=rir_id is not None,
            noise_id=noise_id,
            rir_id=rir_id,
            skipped=skipped,
        )

    def _spectra(self, rir_id: str, rir: np.ndarray, n: int) -> RirSpectra:
        nfft = RirSpectra.fft_size(n, len(rir))
        key = f"{rir_id}\0{nfft}"
        spectra = self._cache.get(key)
        if spectra is None:
            early = self.cfg.early_ms if self.cfg.reverb_target == "early" else None
            spectra = RirSpectra.prepare(rir, nfft, early, self.cfg.sample_rate)
            self._remember(key, spectra)
        else:
            self._cache.move_to_end(key)
        return spectra

    def _level_gain(self, noisy: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> float:
        cfg = self.cfg
        power = active_power(noisy, cfg.active_db)
        if power <= 0:
            return 1.0
        level = rng.uniform(*cfg.level_range_db)
        gain = 10 ** (level / 20) / np.sqrt(power)
        peak = max(float(np.abs(noisy).max()), float(np.abs(target).max())) * gain
        if peak > cfg.peak_limit:
            gain *= cfg.peak_limit / peak
        return float(gain)

    def _draw(
        self,
        bank: list[AudioItem],
        rng: np.random.Generator,
        skipped: list[tuple[str, str]],
        n: int | None = None,
        tries: int = 8,
    ) -> tuple[str, np.ndarray] | None:
        """A random usable file from ``bank``: a window of at least ``n`` samples [S], or with
        ``n`` None the whole file with each of its channels [C, S] (RIRs)."""
        for _ in range(tries):
            item = bank[int(rng.integers(len(bank)))]
            if item.location in self._bad:
                continue
            try:
                return item.id, self._read(item, rng, n)
            except AudioError as e:
                self._bad.add(item.location)
                skipped.append((item.location, e.reason))
                log.warning("skipping %s", e)
        return None

    def _read(self, item: AudioItem, rng: np.random.Generator, n: int | None) -> np.ndarray:
        key, member = item.location, item.byte_range
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        sr = self.cfg.sample_rate
        if n is not None and item.duration is not None and item.duration * sr > max(4 * n, 60 * sr):
            # Long file: decode only a random window instead of caching the whole file.
            seconds = n / sr
            offset = float(rng.uniform(0, item.duration - seconds))
            wav = load_audio(item.path, sr, offset=offset, duration=seconds, reject_silent=True,
                             byte_range=member)
            if len(wav) >= n // 2:
                return wav
        if n is None:
            wav = load_channels(item.path, sr, byte_range=member)
        else:
            wav = load_audio(item.path, sr, reject_silent=True, byte_range=member)
        self._remember(key, wav)
        return wav

    def _remember(self, key: str, value: np.ndarray | RirSpectra) -> None:
        self._cache[key] = value
        self._cache_bytes += _nbytes(value)
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= _nbytes(old)

    def _distort(self, noisy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d = self.cfg.distortions
        if not d.enabled:
            return noisy
        if self._augment is None:
            import audiomentations as A

            self._augment = A.Compose(
                [
                    A.LowPassFilter(
                        min_cutoff_freq=d.band_limit_hz[0], max_cutoff_freq=d.band_limit_hz[1],
                        p=d.p_band_limit,
                    ),
                    A.ClippingDistortion(
                        min_percentile_threshold=int(d.clipping_percentile[0]),
                        max_percentile_threshold=int(d.clipping_percentile[1]),
                        p=d.p_clipping,
                    ),
                    A.Gain(min_gain_db=d.gain_db[0], max_gain_db=d.gain_db[1], p=d.p_gain),
                    A.SevenBandParametricEQ(
                        min_gain_db=-d.colour_gain_db, max_gain_db=d.colour_gain_db,
                        p=d.p_colour,
                    ),
                    A.HighPassFilter(
                        min_cutoff_freq=d.low_cut_hz[0], max_cutoff_freq=d.low_cut_hz[1],
                        p=d.p_colour,
                    ),
                ]
            )
        # audiomentations draws from the global RNGs: seed them from this example's generator
        # so the example stays a function of (seed, epoch, index).
        seed = int(rng.integers(2**32))
        random.seed(seed)
        np.random.seed(seed)
        return self._augment(samples=noisy, sample_rate=self.cfg.sample_rate).astype(np.float32)


def _nbytes(value: np.ndarray | RirSpectra) -> int:
    if isinstance(value, RirSpectra):
        return value.full.nbytes + (0 if value.early is None else value.early.nbytes)
    return value.nbytes


def _fft_size(n: int) -> int:
    """Smallest 2^k, 3*2^k or 5*2^k >= n: pocketfft is fastest on these (single precision)."""
    return min(m << max(0, (n - 1) // m).bit_length() for m in (1, 3, 5))
