"""The word judge: pocketsphinx restricted to the eval set's own words and sentences.

Open-vocabulary pocketsphinx misses about 45% of the words of clean TTS speech, so differences of
a few points between systems drown in its own errors. The judge keeps pocketsphinx's acoustic
model (shipped in its wheel) but decodes with a closed vocabulary, the words of the eval set's
transcripts with their CMU dictionary pronunciations, and an n-gram language model estimated
from those transcripts (interpolated absolute discounting, written as an ARPA back-off model).
It uses no l3se weights, so it is independent of every model under test.

What it measures: how many reference words survive when the recogniser already knows which
words and word sequences to expect. The LM favours the eval sentences, so absolute values are
optimistic and mean nothing outside this eval set; compare systems against each other and
against the judge's floor, its WER on the clean reference (the ``floor`` row of every table).
Words without a dictionary pronunciation cannot be recognised and always count as errors.

PER-CV, the phone error rate, maps the judge's transcript and the reference text to their
canonical CMU phones and counts phone edits over reference phones: a near-miss substitution
("cat" for "hat") costs one phone of three, an unrelated word all of its phones.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache, cached_property

from l3se.evaluation.asr import PocketSphinxASR
from l3se.evaluation.base import Metric, Pair
from l3se.evaluation.text import WordErrors, normalize_text, word_errors

# Measured on the quickstart eval set's clean references (default decoder settings): bigrams
# 22.2% WER, trigrams 20.7%, 4- and 5-grams 20.7% (its sentences are already unique in trigrams).
ORDER = 3
# Decoder settings: 64 of the acoustic model's Gaussians per frame (default 4) and wider beams take
# the clean floor of the quickstart eval set from 20.7% to 14.5% (topn 16: 16.8%, 32: 15.9%,
# 128: 13.8%) at 5x the decoding time, about 1.3 s per 5 s file on one core. The errors left are
# espeak-ng voices that pocketsphinx's acoustic model does not hear (60% WER on two of ten).
DECODER = {"topn": 64, "beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}
BOS, EOS = "<s>", "</s>"


@cache
def cmu_dictionary() -> dict[str, list[str]]:
    """pocketsphinx's en-us dictionary: word -> pronunciations (phone lists), first the canonical."""
    import pocketsphinx

    path = os.path.join(pocketsphinx.get_model_path(), "en-us", "cmudict-en-us.dict")
    prons: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, *phones = line.split()
            if phones:
                prons.setdefault(word.split("(")[0], []).append(" ".join(phones))
    return prons


def _discount(counts: Counter) -> float:
    """Absolute discount n1 / (n1 + 2 n2) (Ney et al.), kept within [0.1, 0.9]."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return min(max(n1 / (n1 + 2 * n2), 0.1), 0.9) if n1 else 0.5


def arpa_lm(sentences: Sequence[Sequence[str]], order: int = ORDER) -> str:
    """An ARPA back-off LM of ``order`` over word lists, interpolated absolute discounting.

    Unigrams are add-one estimates over the sentences' words and ``</s>``. For n >= 2,
    p(w|h) = max(c(hw) - D, 0) / c(h) + D N(h) / c(h) p(w|h') with N(h) the number of distinct
    words seen after h and h' the history without its first word; the back-off weight of h is
    then exactly D N(h) / c(h).
    """
    if order < 1:
        raise ValueError("order must be at least 1")
    counts: list[Counter] = [Counter() for _ in range(order + 1)]
    for words in sentences:
        toks = (BOS, *words, EOS)
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                counts[n][toks[i:i + n]] += 1
    words = sorted({w for s in sentences for w in s}) + [EOS]
    total = sum(counts[1][(w,)] for w in words)
    probs: list[dict[tuple, float]] = [{}, {(w,): (counts[1][(w,)] + 1) / (total + len(words))
                                            for w in words}]
    backoff: dict[tuple, float] = {}
    for n in range(2, order + 1):
        seen, types = Counter(), Counter()
        for gram, c in counts[n].items():
            seen[gram[:-1]] += c
            types[gram[:-1]] += 1
        d = _discount(counts[n])
        probs.append({
            gram: (c - d) / seen[gram[:-1]] + d * types[gram[:-1]] / seen[gram[:-1]] * probs[n - 1][gram[1:]]
            for gram, c in counts[n].items()
        })
        backoff.update({h: d * types[h] / seen[h] for h in seen})
    lines = ["\\data\\"] + [f"ngram {n}={len(probs[n]) + (n == 1)}" for n in range(1, order + 1)]
    for n in range(1, order + 1):
        lines += ["", f"\\{n}-grams:"]
        # <s> starts every sentence and is never predicted.
        entries = ([(-99.0, (BOS,))] if n == 1 else []) + [(math.log10(p), g) for g, p in probs[n].items()]
        for logp, gram in entries:
            bow = f"\t{math.log10(backoff[gram]):.6f}" if n < order and gram in backoff else ""
            lines.append(f"{logp:.6f}\t{' '.join(gram)}{bow}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


class ClosedVocabulary:
    """The judge's vocabulary, dictionary and LM for a set of reference transcripts.

    Cheap to build (no decoder): the parent process uses ``fingerprint`` for its score cache;
    ``recogniser()`` makes the decoder.
    """

    def __init__(self, transcripts: Iterable[str], order: int = ORDER):
        prons = cmu_dictionary()
        self.order = order
        sentences = sorted({normalize_text(t) for t in transcripts if t})
        vocab = sorted({w for s in sentences for w in s.split()})
        self.oov = [w for w in vocab if w not in prons]
        self.phones = {w: prons[w][0].split() for w in vocab if w in prons}
        self.dictionary = "".join(
            f"{w}{'' if i == 0 else f'({i + 1})'} {p}\n"
            for w in vocab if w in prons for i, p in enumerate(prons[w])
        )
        # Unpronounceable words leave the LM too: the decoder could never output them.
        known = [[w for w in s.split() if w in self.phones] for s in sentences]
        self.lm = arpa_lm([s for s in known if s], order)

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha1((self.lm + self.dictionary + repr(DECODER)).encode()).hexdigest()[:12]

    def recogniser(self) -> PocketSphinxASR:
        with tempfile.TemporaryDirectory(prefix="l3se-judge-") as tmp:
            lm, dic = os.path.join(tmp, "judge.lm"), os.path.join(tmp, "judge.dict")
            with open(lm, "w", encoding="utf-8") as f:
                f.write(self.lm)
            with open(dic, "w", encoding="utf-8") as f:
                f.write(self.dictionary)
            asr = PocketSphinxASR(lm=lm, dict=dic, **DECODER)  # both files are read here, once
        asr.label = f"pocketsphinx en-us, closed vocabulary ({len(self.phones)} words, {self.order}-gram)"
        return asr

    def phone_sequence(self, text: str) -> list[str]:
        """Canonical phones of a text's words; an unpronounceable word is one token of its own."""
        return [p for w in normalize_text(text).split() for p in self.phones.get(w, [f"<{w}>"])]


class PhoneErrorRate(Metric):
    """PER-CV: phone edits between the judge's transcript and the reference text, in % of
    reference phones (columns ``per_cv``, ``per_cv_errors``, ``per_cv_words``)."""

    name = "per_cv"
    columns = ("per_cv", "per_cv_errors", "per_cv_words")

    def __init__(self, asr, vocabulary: ClosedVocabulary):
        self._asr = asr
        self._vocab = vocabulary

    def score(self, pair: Pair) -> dict:
        # The same memo key as the judge's WER metric: one decode serves both.
        hyp = pair.output_side(("asr", id(self._asr)), lambda: self._asr.transcribe(pair.est))
        counts = phone_errors(self._vocab.phone_sequence(pair.text), self._vocab.phone_sequence(hyp))
        return {"per_cv": counts.wer, "per_cv_errors": counts.errors, "per_cv_words": counts.ref_words}


def phone_errors(ref: list[str], hyp: list[str]) -> WordErrors:
    """Levenshtein alignment of two phone sequences, counted like words."""
    return word_errors(" ".join(ref), " ".join(hyp), normalize=False)
