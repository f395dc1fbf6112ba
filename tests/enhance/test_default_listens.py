"""The bundled default must follow what it hears, and should enhance it.

Listening: each output tracks its own clean reference, and different inputs give different outputs.
l3se's first shipped model said the same babble to every input and fails these checks (measured:
envelope correlation with its own reference 0.05 on average, outputs of different inputs
correlated at 0.86-0.99). Returning the noisy input unchanged passes them too: they tell a deaf
model from one that listens, nothing more.

Enhancing: an output must be more intelligible (STOI against the clean reference) than the noisy
input it came from. The noisy input is the negative control, the clean reference the positive one.
The current default does not meet it (see ``ENHANCEMENT_GAP``), so that test is an expected
failure that turns into an error the day a model meets it.
"""

import numpy as np
import pytest
import torch
from scipy import signal

from data_sim.starter.noises import pink
from data_sim.starter.tts import Voice, finish, synthesize
from l3se.diagnostics import codebook_usage, envelope_correlation, mean_pairwise_correlation
from l3se.enhancer import DEFAULT_MODEL_DIR, Enhancer
from l3se.evaluation.signal import stoi
from l3se.models.codec import WavCodec

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 16000
SNR_DB = 5.0
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore every morning",
    "seven red apples fell from the old tree",
    "please call stella and ask her to bring these things",
]
# Controls on these four sentences in pink noise at 5 dB: the noisy input follows its own
# reference at 0.98 and another's at most 0.15, with a mean pairwise correlation of -0.01; a deaf
# model's pairwise correlation was 0.86-0.99. The thresholds sit between those controls. The
# shipped model (2026-12-06) measured 0.91-0.97 (lm) and 0.92-0.96 (direct) against its own
# reference, at most 0.19 against another's, and a mean pairwise correlation of 0.15 / 0.14 (the
# one before it, whose codec stamped a 25 Hz buzz on every output: 0.33 / 0.35).
ENVELOPE_MIN = {"lm": 0.7, "direct": 0.8}
OTHERS_MAX = 0.4
PAIRWISE_MAX = 0.5
# Codec resynthesis of clean speech: envelope 0.93-0.97 with 34-43% of each codebook used.
CODEC_ENVELOPE_MIN = 0.75
CODEC_USAGE_MIN = 0.25
# Mean STOI an output must gain over its noisy input (0.89 here; clean scores 1).
STOI_GAIN_MIN = 0.02
ENHANCEMENT_GAP = (
    "the bundled default scores below its noisy input here: mean STOI 0.82 (lm and direct) "
    "against the input's 0.89 on these sentences in pink noise at 5 dB (measured 2026-12-06); "
    "the tiny codec's resynthesis of clean speech (0.82 on the eval set) is the ceiling, and "
    "this input is clearer than that (docs/codec.md)"
)


def snr_db(clean: np.ndarray, noise: np.ndarray) -> float:
    """SNR with the DC of both removed: an offset carries no speech and no audible noise."""
    clean, noise = clean - clean.mean(), noise - noise.mean()
    return float(10 * np.log10(np.sum(clean**2) / np.sum(noise**2)))


@pytest.fixture(scope="module")
def speech():
    """4 espeak-ng sentences (a voice the starter corpus holds out), their pink noise (power
    -3 dB per octave) at 5 dB, and the noisy mixtures."""
    rng = np.random.default_rng(0)
    voice = Voice("espeak-ng", "en-gb-x-rp+m3")
    clean = [finish(synthesize(voice, s), rng, peak_db=(-6.0, -6.0)) for s in SENTENCES]
    noises = []
    for c in clean:
        n = pink(rng, len(c) / SR + 0.1)[: len(c)]
        n = n - n.mean()
        noises.append(n * 10 ** ((snr_db(c, n) - SNR_DB) / 20))
    noisy = [(c + n).astype(np.float32) for c, n in zip(clean, noises)]
    return clean, noises, noisy


@pytest.fixture(scope="module")
def enhanced(speech):
    """mode -> the default's outputs for the noisy mixtures, each mode decoded once."""
    _, _, noisy = speech
    enhancer = Enhancer.from_pretrained(DEFAULT_MODEL_DIR)
    cache = {}

    def outputs(mode):
        if mode not in cache:
            with torch.inference_mode():
                cache[mode] = enhancer.enhance_batch([(x, SR) for x in noisy], mode=mode)
        return cache[mode]

    return outputs


def mean_stoi(outputs, clean) -> float:
    """Mean STOI of outputs cut or zero-padded to their references."""
    return float(np.mean([stoi(c, np.pad(y, (0, max(0, len(c) - len(y))))[: len(c)])
                          for y, c in zip(outputs, clean)]))


def enhances(outputs, speech) -> bool:
    clean, _, noisy = speech
    return mean_stoi(outputs, clean) >= mean_stoi(noisy, clean) + STOI_GAIN_MIN


def test_the_noise_is_pink_at_5_db_across_the_speech_band(speech):
    clean, noises, _ = speech
    highpass = signal.butter(4, 60, "highpass", fs=SR, output="sos")
    for c, n in zip(clean, noises):
        assert snr_db(c, n) == pytest.approx(SNR_DB, abs=0.01)
        # Not rumble under the speech: 60 Hz and below hold little of the noise (measured 6.5 dB
        # after the high-pass; white noise plus a random walk gave 16-19 dB).
        filtered = snr_db(signal.sosfilt(highpass, c), signal.sosfilt(highpass, n))
        assert filtered < SNR_DB + 2.5
        # Equal power per octave from 250 Hz to 4 kHz.
        f, psd = signal.welch(n, SR, nperseg=2048)
        octaves = [psd[(f >= lo) & (f < 2 * lo)].sum() for lo in (250, 500, 1000, 2000)]
        assert np.ptp(10 * np.log10(octaves)) < 1.5


def test_the_controls_fall_either_side_of_the_thresholds(speech):
    clean, _, noisy = speech
    # The noisy input follows its reference (a model that listens can pass) and not another's.
    for i, x in enumerate(noisy):
        assert envelope_correlation(x, clean[i]) >= max(ENVELOPE_MIN.values())
        assert all(envelope_correlation(x, c) < OTHERS_MAX for j, c in enumerate(clean) if j != i)
    assert mean_pairwise_correlation(noisy) < PAIRWISE_MAX
    # The enhancement criterion: the noisy input fails it, the clean speech passes it.
    assert not enhances(noisy, speech)
    assert enhances(clean, speech)


@pytest.mark.parametrize("mode", ["lm", "direct"])
def test_each_output_follows_its_own_reference(speech, enhanced, mode):
    clean = speech[0]
    outputs = enhanced(mode)
    own = [envelope_correlation(y, c) for y, c in zip(outputs, clean)]
    assert min(own) >= ENVELOPE_MIN[mode], own
    for i, y in enumerate(outputs):
        others = [envelope_correlation(y, c) for j, c in enumerate(clean) if j != i]
        assert max(others) < OTHERS_MAX and own[i] > max(others) + 0.2, (i, own[i], others)
    # A model that says the same thing to everyone has strongly correlated outputs.
    assert mean_pairwise_correlation(outputs) < PAIRWISE_MAX


@pytest.mark.xfail(reason=ENHANCEMENT_GAP, strict=True)
@pytest.mark.parametrize("mode", ["lm", "direct"])
def test_outputs_are_more_intelligible_than_the_noisy_input(speech, enhanced, mode):
    clean, _, noisy = speech
    outputs = enhanced(mode)
    assert enhances(outputs, speech), (mean_stoi(outputs, clean), mean_stoi(noisy, clean))


def test_codec_resynthesis_follows_the_input_and_uses_its_codebooks(speech):
    clean = speech[0]
    codec = WavCodec.from_pretrained(DEFAULT_MODEL_DIR / "codec").eval()
    codes, envelopes = [], []
    with torch.inference_mode():
        for c in clean:
            x = torch.from_numpy(c)[None]
            code = codec.encode(x)
            codes.append(code)
            envelopes.append(envelope_correlation(codec.decode(code, x.shape[-1])[0].numpy(), c))
    assert min(envelopes) >= CODEC_ENVELOPE_MIN, envelopes
    usage = codebook_usage(torch.cat(codes, -1), codec.cfg.codebook_size)
    assert min(usage) >= CODEC_USAGE_MIN, usage
