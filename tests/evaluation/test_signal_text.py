import numpy as np
import pytest

from l3se.evaluation.signal import pesq_wb, si_sdr, stoi
from l3se.evaluation.text import corpus_wer, normalize_text, number_to_words, word_errors
from tests.evaluation.conftest import mix_at_snr


def test_identical_signals_score_at_the_top(speech):
    clean = speech[0][1]
    assert pesq_wb(clean, clean) > 4.4
    assert stoi(clean, clean) == pytest.approx(1.0, abs=1e-3)
    assert stoi(clean, clean, extended=True) == pytest.approx(1.0, abs=1e-3)
    assert si_sdr(clean, clean) > 60


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 20.0])
def test_si_sdr_of_a_mixture_matches_its_snr(snr):
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(32000)
    noise = rng.standard_normal(32000)
    noise -= ref * (noise @ ref) / (ref @ ref)  # orthogonal: SI-SDR equals the SNR exactly
    mix = ref + noise * np.sqrt((ref @ ref) / (noise @ noise) / 10 ** (snr / 10))
    assert si_sdr(ref, mix) == pytest.approx(snr, abs=0.01)
    # Scale invariance: a gain on the estimate changes nothing.
    assert si_sdr(ref, 0.3 * mix) == pytest.approx(snr, abs=0.01)


def test_si_sdr_with_independent_noise(speech):
    clean = speech[1][1]
    assert si_sdr(clean, mix_at_snr(clean, 5.0, seed=3)) == pytest.approx(5.0, abs=0.3)


def test_degradation_lowers_pesq_and_stoi(speech):
    clean = speech[0][1]
    noisy = mix_at_snr(clean, 0.0, seed=1)
    assert pesq_wb(clean, noisy) < 2.0
    assert stoi(clean, noisy) < 0.95


def test_unratable_signals_give_nan():
    assert np.isnan(si_sdr(np.zeros(100), np.ones(100)))
    assert np.isnan(stoi(np.ones(1000), np.ones(1000)))


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Hello, World!", "hello world"),
        ("Don\u2019t STOP -- it's \"fine\".", "don't stop it's fine"),
        ("21st-century 3.5 5% 1,234", "twenty first century three point five five percent "
                                      "one thousand two hundred thirty four"),
        ("  ", ""),
    ],
)
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(2_000_019) == "two million nineteen"


@pytest.mark.parametrize(
    ("ref", "hyp", "errors", "words"),
    [
        ("THE CAT SAT ON THE MAT.", "the cat sat on the mat", 0, 6),  # only case/punctuation
        ("the cat sat on the mat", "the cat sat on a mat", 1, 6),  # substitution
        ("the cat sat on the mat", "the cat on the mat", 1, 6),  # deletion
        ("the cat sat on the mat", "the fat cat sat on the mat today", 2, 6),  # insertions
        ("i have 2 cats", "I have two cats", 0, 4),  # numbers as words
        ("a b c", "", 3, 3),
        ("", "a b", 2, 0),
    ],
)
def test_word_errors(ref, hyp, errors, words):
    counts = word_errors(ref, hyp)
    assert (counts.errors, counts.ref_words) == (errors, words)
    if words:
        assert counts.wer == pytest.approx(100 * errors / words)


def test_corpus_wer_weights_by_reference_words():
    counts = [word_errors("a b c d", "a b c x"), word_errors("a b c d e f g h", "a b c d e f g h")]
    assert corpus_wer(counts) == pytest.approx(100 * 1 / 12)
