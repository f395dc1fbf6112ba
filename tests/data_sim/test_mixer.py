import numpy as np
import pytest

from data_sim.mixer import (
    MixConfig,
    Mixer,
    active_power,
    fit_length,
    mix_at_snr,
    reverberate,
)
from data_sim.sources import load_source, read_rir_folder
from tests.conftest import speech_like, synthetic_rir


def measured_snr(speech, noise):
    return 10 * np.log10(active_power(speech) / active_power(noise))


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_mix_at_snr_exact(snr):
    rng = np.random.default_rng(1)
    s = speech_like(rng, 4.0)
    n = rng.standard_normal(len(s)).astype(np.float32)
    assert abs(measured_snr(s, mix_at_snr(s, n, snr)) - snr) < 0.05


def test_active_power_ignores_silence():
    x = np.zeros(16000 * 4, np.float32)
    x[:16000] = 0.5
    assert active_power(x) == pytest.approx(0.25, rel=1e-6)


def test_mixtures_hit_requested_snr(corpus):
    cfg = MixConfig(snr_range=(-5, 20), p_reverb=0.5)
    mixer = Mixer(cfg, load_source(corpus / "noise"), read_rir_folder(corpus / "rir"))
    rng = np.random.default_rng(0)
    seen_reverb = set()
    for i in range(30):
        m = mixer(speech_like(rng, 4.0), np.random.default_rng(i))
        assert m.snr_db is not None and -5 <= m.snr_db <= 20
        # The level gain and clipping protection scale speech and noise alike: SNR survives.
        assert abs(measured_snr(m.speech, m.noise) - m.snr_db) < 0.5
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


def test_early_target_keeps_only_first_50ms():
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


def test_missing_banks_are_config_errors():
    with pytest.raises(ValueError, match="no noise files"):
        Mixer(MixConfig(p_reverb=0.0))
    with pytest.raises(ValueError, match="no RIR files"):
        Mixer(MixConfig(p_noise=0.0))
