"""English text normalisation and word error counting (WER, dWER).

``normalize_text`` makes an ASR hypothesis and a reference comparable: Unicode folding, lower
case, numbers spelled out ("21" -> "twenty one", "3.5" -> "three point five", "5%" -> "five
percent"), hyphens split, punctuation removed, in-word apostrophes kept ("don't"). This is the
usual LibriSpeech-style convention (references there are already upper-case words), not
Whisper's full English normaliser: spelling variants such as "colour"/"color" still count.

Corpus WER is ``sum(errors) / sum(reference words)``; per-file WER uses the same counts.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                    "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}

_NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)(st|nd|rd|th)?(%?)")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def number_to_words(n: int) -> str:
    """Cardinal number in words, e.g. 1234 -> 'one thousand two hundred thirty four'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            rest = n % value
            head = number_to_words(n // value) + " " + name
            return head + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_ENDINGS:
        last = _ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _spell_number(match: re.Match) -> str:
    digits, ordinal, percent = match.groups()
    whole, _, frac = digits.replace(",", "").partition(".")
    words = number_to_words(int(whole))
    if ordinal and not frac:
        words = _ordinal(words)
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words}{' percent' if percent else ''} "


def normalize_text(text: str) -> str:
    """Normalised words joined by single spaces (see module docstring)."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = _NUMBER.sub(_spell_number, text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    # Quote marks around words are punctuation; apostrophes inside words are spelling.
    words = (w.strip("'") for w in text.split())
    return " ".join(w for w in words if w)


@dataclass(frozen=True)
class WordErrors:
    """Edit operations aligning a hypothesis to a reference, counted in words."""

    substitutions: int
    deletions: int
    insertions: int
    ref_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """WER in percent; NaN for an empty reference (a corpus sum still counts its errors)."""
        return 100.0 * self.errors / self.ref_words if self.ref_words else float("nan")


def word_errors(reference: str, hypothesis: str, normalize: bool = True) -> WordErrors:
    """Word-level Levenshtein alignment (jiwer) of two transcripts."""
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    ref_n, hyp_n = len(reference.split()), len(hypothesis.split())
    # jiwer refuses empty references; the alignment is then all insertions (or nothing).
    if ref_n == 0 or hyp_n == 0:
        return WordErrors(0, ref_n, hyp_n, ref_n)
    import jiwer

    out = jiwer.process_words(reference, hypothesis)
    return WordErrors(out.substitutions, out.deletions, out.insertions, ref_n)


def corpus_wer(counts: list[WordErrors]) -> float:
    """WER in percent over many files: total errors over total reference words."""
    words = sum(c.ref_words for c in counts)
    return 100.0 * sum(c.errors for c in counts) / words if words else float("nan")
