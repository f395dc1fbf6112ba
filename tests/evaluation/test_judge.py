import math

import pytest

from l3se.evaluation import evaluate
from l3se.evaluation.judge import ClosedVocabulary, arpa_lm, phone_errors
from l3se.evaluation.text import corpus_wer, word_errors
from tests.evaluation.conftest import SENTENCES, mix_at_snr


def _read_arpa(text: str) -> tuple[dict, dict]:
    """log10 probabilities and back-off weights by n-gram tuple."""
    logp, bow = {}, {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            gram = tuple(parts[1].split())
            logp[gram] = float(parts[0])
            if len(parts) == 3:
                bow[gram] = float(parts[2])
    return logp, bow


def _prob(logp: dict, bow: dict, gram: tuple) -> float:
    """p(w|h) by the ARPA back-off rule."""
    if gram in logp:
        return 10 ** logp[gram]
    return 10 ** bow.get(gram[:-1], 0.0) * _prob(logp, bow, gram[1:])


@pytest.mark.parametrize("order", [1, 2, 3])
def test_lm_distributions_sum_to_one(order):
    sentences = [s.split() for s in ("a b c a", "a c", "b b a c", "c")]
    logp, bow = _read_arpa(arpa_lm(sentences, order))
    histories = {()} | {g for g in logp if len(g) < order and g[-1] != "</s>"}
    for h in histories:
        total = sum(_prob(logp, bow, (*h, w)) for w in ("a", "b", "c", "</s>"))
        assert total == pytest.approx(1.0, abs=1e-5), h


def test_lm_prefers_seen_continuations():
    logp, bow = _read_arpa(arpa_lm([s.split() for s in ("the cat sat", "the dog ran")], 3))
    # Singletons only: the discount is at its 0.9 cap, and still seen beats unseen fourfold.
    assert _prob(logp, bow, ("the", "cat", "sat")) > 4 * _prob(logp, bow, ("the", "cat", "ran"))
    assert logp[("<s>",)] == -99.0


def test_vocabulary_dictionary_and_phones():
    vocab = ClosedVocabulary(["Read the BOOK.", "I read it, zorblax!"])
    assert vocab.oov == ["zorblax"]
    assert "read(2) " in vocab.dictionary and "zorblax" not in vocab.lm
    assert vocab.phone_sequence("the book") == ["DH", "AH", "B", "UH", "K"]
    assert vocab.phone_sequence("a zorblax")[-1] == "<zorblax>"
    assert vocab.fingerprint != ClosedVocabulary(["read the book"]).fingerprint


def test_phone_errors_grade_near_misses():
    vocab = ClosedVocabulary(["the cat", "the hat", "the dog"])
    ref = vocab.phone_sequence("the cat")
    assert phone_errors(ref, vocab.phone_sequence("the hat")).wer == pytest.approx(100 * 1 / 5)
    assert phone_errors(ref, vocab.phone_sequence("the dog")).wer == pytest.approx(100 * 3 / 5)
    assert word_errors("the cat", "the hat").wer == word_errors("the cat", "the dog").wer == 50


@pytest.fixture(scope="module")
def judge():
    # The conftest sentences among distractors, as in an eval set's transcript list.
    return ClosedVocabulary([*SENTENCES, "the dog sat on a chair near the door",
                             "we will go for a walk in the park"]).recogniser()


def test_judge_recognises_clean_speech_and_loses_words_in_noise(judge, speech):
    def wer(snr):
        counts = [word_errors(text, judge.transcribe(wav if snr is None else mix_at_snr(wav, snr, i)))
                  for i, (text, wav) in enumerate(speech)]
        return corpus_wer(counts)

    clean, noisy = wer(None), wer(0.0)
    # Measured 0% clean and 97% at 0 dB white noise (open-vocabulary pocketsphinx: 0% and 100%).
    assert clean < 10.0
    assert noisy > clean + 50.0


def test_floor_row_and_judge_columns_through_evaluate(tmp_path, evalset):
    res = evaluate(evalset, {"noisy": None}, metrics="sisdr,wer_cv,per_cv", out_dir=tmp_path / "r",
                   progress=False, workers=1)
    assert res.systems == ["noisy", "floor"]
    floor = [r for r in res.rows if r["system"] == "floor"]
    noisy = [r for r in res.rows if r["system"] == "noisy"]
    assert len(floor) == 3 and all(r.get("sisdr") is None for r in floor)
    assert sum(r["wer_cv_errors"] for r in floor) <= sum(r["wer_cv_errors"] for r in noisy)
    assert all(math.isfinite(r["per_cv"]) and r["per_cv_words"] > r["wer_cv_words"] for r in floor)
    table = (tmp_path / "r" / "comparison.csv").read_text().splitlines()
    assert "general WER-CV" in table[0] and "general PER-CV" in table[0]
    assert table[-1].startswith("floor,")
    assert "Row floor:" in (tmp_path / "r" / "summary.md").read_text()
    # With the clean system evaluated its row is the floor: no second one.
    res = evaluate(evalset, {"noisy": None, "clean": None}, metrics="wer_cv", progress=False,
                   workers=1)
    assert res.systems == ["noisy", "clean"]
