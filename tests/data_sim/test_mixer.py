import numpy as np
import pytest

from data_sim.audio import SAMPLE_RATE, load_audio, write_audio
from data_sim.mixer import (
    MixConfig,
    Mixer,
    RirSpectra,
    active_power,
    fit_length,
    mix_at_snr,
    reverberate,
)
from data_sim.sources import AudioItem, load_source, read_rir_folder
from tests.conftest import speech_like, synthetic_rir


def power_snr(speech, noise):
    """SNR from mean powers, independent of ``active_power``: for signals without silent frames
    the two agree."""
    return 10 * np.log10(np.mean(np.square(speech, dtype=np.float64))
                         / np.mean(np.square(noise, dtype=np.float64)))


def tone(seconds):
    """A steady voiced sound: harmonics of 150 Hz, no pauses, so every 20 ms frame is active."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))).astype(np.float32)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_mix_at_snr_exact(snr):
    s = tone(4.0)
    s[len(s) // 2 :] = 0  # silence does not count towards the speech power
    n = np.random.default_rng(1).standard_normal(len(s)).astype(np.float32)
    assert abs(power_snr(s[: len(s) // 2], mix_at_snr(s, n, snr)) - snr) < 0.01


def test_active_power_ignores_silence():
    x = np.zeros(16000 * 4, np.float32)
    x[:16000] = 0.5
    assert active_power(x) == pytest.approx(0.25, rel=1e-6)


def test_mixtures_hit_requested_snr(corpus):
    cfg = MixConfig(snr_range=(-5, 20), p_reverb=0.5)
    mixer = Mixer(cfg, load_source(corpus / "noise"), read_rir_folder(corpus / "rir"))
    seen_reverb = set()
    for i in range(30):
        m = mixer(tone(4.0), np.random.default_rng(i))
        assert m.snr_db is not None and -5 <= m.snr_db <= 20
        # The level gain and clipping protection scale speech and noise alike: SNR survives.
        assert abs(power_snr(m.speech, m.noise) - m.snr_db) < 0.01
        assert np.allclose(m.noisy, m.speech + m.noise, atol=1e-5)
        assert max(np.abs(m.noisy).max(), np.abs(m.target).max()) <= cfg.peak_limit + 1e-6
        seen_reverb.add(m.reverb)
    assert seen_reverb == {True, False}


@pytest.mark.parametrize("target", ["dry", "early"])
def test_reverb_has_no_delay(target):
    rng = np.random.default_rng(3)
    # White noise: its autocorrelation is a spike, so the cross-correlation peak is the lag.
    clean = rng.standard_normal(48000).astype(np.float32)
    rir = synthetic_rir(rng, 0.5)
    wet, tgt = reverberate(clean, rir, target)
    assert len(wet) == len(tgt) == len(clean)
    for y in (wet, tgt):
        xc = np.correlate(y[:16000], clean[:16000], "full")
        assert np.argmax(xc) - (16000 - 1) == 0  # peak cross-correlation at lag 0
    if target == "dry":
        assert tgt is clean


@pytest.mark.parametrize("target", ["dry", "early"])
def test_cached_spectra_equal_direct_convolution(target):
    rng = np.random.default_rng(4)
    rir = synthetic_rir(rng, 0.3)
    d = int(np.argmax(np.abs(rir)))
    h = rir.astype(np.float64) / rir[d]
    early_ms = 50.0 if target == "early" else None
    spectra = RirSpectra.prepare(rir, RirSpectra.fft_size(16000, len(rir)), early_ms)
    for n in (16000, 12345):  # one spectrum serves every signal that fits
        clean = rng.standard_normal(n).astype(np.float32)
        wet, tgt = spectra.apply(clean)
        np.testing.assert_allclose(wet, np.convolve(clean, h)[d : d + n], atol=1e-4)
        ref = clean if early_ms is None else np.convolve(clean, h[: d + 801])[d : d + n]
        np.testing.assert_allclose(tgt, ref, atol=1e-4)
    with pytest.raises(ValueError, match="do not fit"):
        spectra.apply(np.zeros(spectra.nfft - len(rir) + 2, np.float32))


def test_mixer_reverb_equals_direct_convolution(tmp_path):
    rng = np.random.default_rng(5)
    write_audio(tmp_path / "rir.wav", synthetic_rir(rng, 0.3))
    rir = load_audio(tmp_path / "rir.wav").astype(np.float64)
    d = int(np.argmax(np.abs(rir)))
    mixer = Mixer(MixConfig(p_noise=0.0, p_reverb=1.0), rirs=[AudioItem("r", str(tmp_path / "rir.wav"))])
    lengths = (16000, 15900)
    assert len({RirSpectra.fft_size(n, len(rir)) for n in lengths}) == 1  # the second reuses it
    for n in lengths:
        clean = rng.standard_normal(n).astype(np.float32)
        m = mixer(clean, np.random.default_rng(n))
        gain = np.dot(m.target, clean) / np.dot(clean, clean)  # the dry target is clean * gain
        np.testing.assert_allclose(m.speech / gain, np.convolve(clean, rir / rir[d])[d : d + n],
                                   atol=1e-4)
    assert sum(isinstance(v, RirSpectra) for v in mixer._cache.values()) == 1



    impulse = np.zeros(16000, np.float32)
    impulse[1000] = 1.0
    rir = synthetic_rir(np.random.default_rng(0), 0.5)
    _, early = reverberate(impulse, rir, "early", early_ms=50)
    nz = np.nonzero(np.abs(early) > 1e-7)[0]
    assert nz.min() == 1000 and nz.max() <= 1000 + 800  # 50 ms = 800 samples


def test_fit_length_loops_and_crops():
    rng = np.random.default_rng(0)
    x = np.arange(10, dtype=np.float32)
    y = fit_length(x, 25, rng)
    assert len(y) == 25 and set(np.diff(y)) <= {1.0, -9.0}  # a continuous loop
    assert len(fit_length(np.arange(100.0), 30, rng)) == 30


def test_level_randomised_within_range(corpus):
    cfg = MixConfig(p_reverb=0.0, level_range_db=(-30, -20))
    mixer = Mixer(cfg, load_source(corpus / "noise"))
    for i in range(10):
        m = mixer(speech_like(np.random.default_rng(i), 3.0), np.random.default_rng(i))
        level = 10 * np.log10(active_power(m.noisy))
        assert -30.01 <= level <= -19.99 or np.abs(m.noisy).max() >= cfg.peak_limit - 1e-4


def test_clean_only_is_identity_up_to_gain():
    m = Mixer(MixConfig.clean_only())(speech_like(np.random.default_rng(0), 2.0),
                                      np.random.default_rng(0))
    assert np.array_equal(m.noisy, m.target) and m.snr_db is None and not m.reverb


def test_distortions_deterministic(corpus):
    cfg = MixConfig(p_reverb=0.0)
    cfg.distortions.p_band_limit = 1.0
    cfg.distortions.p_clipping = 1.0
    mixer = Mixer(cfg, load_source(corpus / "noise"))
    clean = speech_like(np.random.default_rng(0), 2.0)
    a = mixer(clean, np.random.default_rng(5))
    b = mixer(clean, np.random.default_rng(5))
    assert np.array_equal(a.noisy, b.noisy)
    assert not np.allclose(a.noisy, a.speech + a.noise)  # the distortion did something


def test_microphone_colouring_reshapes_the_input_spectrum_only(corpus):
    cfg = MixConfig(p_reverb=0.0)
    cfg.distortions.p_colour = 1.0
    mixer = Mixer(cfg, load_source(corpus / "noise"))
    clean = speech_like(np.random.default_rng(0), 2.0)
    a = mixer(clean, np.random.default_rng(5))
    assert np.array_equal(a.noisy, mixer(clean, np.random.default_rng(5)).noisy)
    # Band levels move by decibels, not by a single gain: the EQ and the low cut.
    def bands(x):
        spec = np.abs(np.fft.rfft(x)) ** 2
        edges = np.linspace(0, len(spec), 9).astype(int)
        return 10 * np.log10([spec[lo:hi].sum() for lo, hi in zip(edges[:-1], edges[1:])])
    change = bands(a.noisy) - bands(a.speech + a.noise)
    assert change.max() - change.min() > 2.0, change
    assert len(a.noisy) == len(a.target) and not np.array_equal(a.target, a.noisy)


def test_missing_banks_are_config_errors():
    with pytest.raises(ValueError, match="no noise files"):
        Mixer(MixConfig(p_reverb=0.0))
    with pytest.raises(ValueError, match="no RIR files"):
        Mixer(MixConfig(p_noise=0.0))


def test_multichannel_rir_uses_one_channel_per_draw(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(3)
    # An array recording: the direct path reaches the two microphones at different delays.
    a, b = synthetic_rir(rng, 0.3)[:4000], synthetic_rir(rng, 0.3)[:4000]
    channels = [np.pad(a, (0, 300)), np.pad(b, (300, 0))]
    sf.write(tmp_path / "array.wav", np.stack(channels, axis=1) * 0.5, SAMPLE_RATE,
             subtype="FLOAT")
    mixer = Mixer(MixConfig(p_noise=0.0, p_reverb=1.0),
                  rirs=[AudioItem("array", str(tmp_path / "array.wav"))])
    clean = rng.standard_normal(8000).astype(np.float32)
    wets = [reverberate(clean, h)[0] for h in channels]
    used = []
    for seed in range(12):
        m = mixer(clean, np.random.default_rng(seed))
        gain = np.dot(m.target, clean) / np.dot(clean, clean)
        matches = [c for c, wet in enumerate(wets) if np.allclose(m.speech / gain, wet, atol=1e-4)]
        assert len(matches) == 1  # one microphone's response, not the channels' average
        assert m.rir_id == f"array#ch{matches[0]}"
        np.testing.assert_array_equal(mixer(clean, np.random.default_rng(seed)).speech, m.speech)
        used += matches
    assert set(used) == {0, 1}
