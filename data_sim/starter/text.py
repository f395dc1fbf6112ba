"""Generated English sentences with known transcripts, for text-to-speech.

A small template grammar over a built-in vocabulary of common, easily pronounced words makes
varied sentences of 5-15 words. The stream is deterministic given its seed. Each sentence
carries two forms: ``text`` with punctuation (so the synthesiser phrases it naturally) and
``transcript`` in upper case without punctuation, as in LibriSpeech.

Every sentence belongs to exactly one split, decided by a hash of its transcript, so train and
test sentences never overlap however many of each are drawn.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

MIN_WORDS = 5
MAX_WORDS = 15

_WORDS = {
    "name": "anna ben clara david emma frank grace henry julia kevin laura martin nora oliver "
    "peter rachel simon tom victor walter sarah daniel helen mary james robert lucy paul",
    "noun": "man woman child teacher doctor farmer driver baker painter sailor student friend "
    "neighbour captain dog cat horse bird fish cow garden river window kitchen village city "
    "market station forest mountain table letter story picture song book door road bridge "
    "house school boat train apple bread water coffee music money paper morning evening "
    "summer winter island castle tower lamp basket candle ladder pocket stone field",
    "nouns": "children friends people horses birds apples letters flowers stories pictures "
    "windows boxes songs farmers sailors students trees houses ships clouds stones candles "
    "books lamps roads cars hills waves",
    "adj": "old young small little big tall quiet busy happy sleepy brave careful gentle "
    "bright dark cold warm green yellow red white heavy empty famous strange simple "
    "lovely tired hungry clever lonely proud clean",
    "pred": "happy tired ready warm cold quiet busy late afraid hungry calm sure glad angry "
    "lost right wrong kind patient honest early",
    "vt_past": "found saw opened closed painted carried followed washed visited watched "
    "helped called cleaned moved built bought sold took made brought kept left read wrote "
    "heard needed wanted liked",
    "vt_base": "find see open close paint carry follow wash visit watch help call clean move "
    "build buy sell take make bring keep leave read write hear",
    "vt_3sg": "finds sees opens closes paints carries follows washes visits watches helps "
    "calls cleans moves builds buys sells takes makes brings keeps leaves reads writes",
    "vi_past": "slept waited laughed smiled walked danced sang worked listened stayed "
    "arrived rested shouted whispered returned travelled",
    "vi_base": "sleep wait laugh smile walk dance sing work listen stay arrive rest return",
    "adv": "slowly quickly quietly happily suddenly carefully gently loudly early later "
    "again together outside alone",
    "prep": "near behind beside under above inside across along past beyond around",
    "time": "in the morning|at night|after dinner|before noon|on sunday|last week|every day|"
    "in the spring|at dawn|later that day|the next morning|once again|after a while|"
    "in the afternoon|on monday",
    "subj_sg": "he she it",
    "subj_pl": "we they you",
    "obj": "him her them us it",
    "num": "two three four five six seven eight nine ten twelve twenty",
    "modal": "will could should might must can would",
    "say": "said thought knew believed hoped remembered",
    "conj": "and but so while because although",
}
VOCAB = {k: tuple(v.split("|") if "|" in v else v.split()) for k, v in _WORDS.items()}

# {slot}s name vocabulary lists or the phrase rules below; "?" at the end makes a question.
_TEMPLATES = (
    "{np} {vt_past} {np} {pp}.",
    "{np} {vi_past} {adv} {pp}.",
    "{time}, {np} {vt_past} {np}.",
    "{name} {say} that {np} {vi_past} {pp}.",
    "{np} {modal} {vt_base} {np} {time}.",
    "{npsg} {vt_3sg} {np} {time}.",
    "{subj_pl} {vt_past} {num} {nouns} {pp}.",
    "there was {a_np} {pp}.",
    "{npsg} was {pred} {conj} {npsg} was {pred}.",
    "{np} {vt_past} {obj} {conj} {subj_sg} {vi_past} {adv}.",
    "did {np} {vt_base} {np} {pp}?",
    "why {modal} {np} {vi_base} {pp}?",
    "{name} and {name} {vi_past} {time}.",
    "{np} {vi_past} {pp} {conj} {subj_pl} {vt_past} {np}.",
    "when {np} {vi_past}, {np} {vt_past} {np}.",
    "{np} {vt_past} {a_np} {conj} {vt_past} {obj} {adv}.",
    "{time}, {subj_sg} {vi_past} {pp} with {np}.",
    "{np} {pp} {vt_past} {np} {adv}.",
    "{subj_sg} {vi_past} {pp}.",
    "{npsg} was {pred} {time}.",
    "{name} {vi_past} {adv}.",
)
# Appended to a statement now and then, for longer sentences.
_TAILS = (
    ", {conj} {subj_pl} {vi_past} {adv} {pp}",
    " {time}",
    ", {conj} {np} {vt_past} {np}",
)
_TAIL_PROB = 0.35
_SLOT = re.compile(r"\{(\w+)\}")
_VOWELS = set("aeiou")


@dataclass(frozen=True)
class Sentence:
    text: str  # punctuated, lower case: what the synthesiser reads
    transcript: str  # upper case, no punctuation: the reference transcript

    @property
    def n_words(self) -> int:
        return len(self.transcript.split())


class SentenceGenerator:
    """Deterministic stream of sentences of ``MIN_WORDS``..``MAX_WORDS`` words."""

    def __init__(self, seed: int | str):
        self._rng = random.Random(f"l3se-sentences-{seed}")

    def __iter__(self) -> Iterator[Sentence]:
        return self

    def __next__(self) -> Sentence:
        while True:
            template = self._rng.choice(_TEMPLATES)
            if template.endswith(".") and self._rng.random() < _TAIL_PROB:
                template = template[:-1] + self._rng.choice(_TAILS) + "."
            text = self._fill(template)
            sentence = Sentence(text=text[0].upper() + text[1:], transcript=to_transcript(text))
            if MIN_WORDS <= sentence.n_words <= MAX_WORDS:
                return sentence

    def _fill(self, template: str) -> str:
        text = _SLOT.sub(lambda m: self._expand(m.group(1)), template)
        return _fix_articles(text)

    def _expand(self, slot: str) -> str:
        pick = self._rng.choice
        if slot == "np":
            return pick((self._expand("npsg"), self._expand("npsg"), self._expand("nppl")))
        if slot == "npsg":
            return pick(
                (
                    f"the {pick(VOCAB['noun'])}",
                    f"the {pick(VOCAB['adj'])} {pick(VOCAB['noun'])}",
                    f"{pick(('my', 'his', 'her', 'our', 'that'))} {pick(VOCAB['noun'])}",
                    pick(VOCAB["name"]),
                    self._expand("a_np"),
                )
            )
        if slot == "nppl":
            return pick(
                (
                    f"the {pick(VOCAB['nouns'])}",
                    f"the {pick(VOCAB['adj'])} {pick(VOCAB['nouns'])}",
                    f"{pick(VOCAB['num'])} {pick(VOCAB['nouns'])}",
                    f"some {pick(VOCAB['nouns'])}",
                )
            )
        if slot == "a_np":
            adj = f"{pick(VOCAB['adj'])} " if self._rng.random() < 0.5 else ""
            return f"a {adj}{pick(VOCAB['noun'])}"
        if slot == "pp":
            return f"{pick(VOCAB['prep'])} the {pick(VOCAB['noun'])}"
        return pick(VOCAB[slot])


def to_transcript(text: str) -> str:
    """LibriSpeech form: upper case, words separated by single spaces, no punctuation."""
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower()).split()).upper()


def split_of(sentence: Sentence) -> str:
    """'train' or 'test': a stable hash of the transcript puts every sentence in one split."""
    return "test" if zlib.crc32(sentence.transcript.encode()) % 2 else "train"


def sentence_stream(seed: int, split: str) -> Iterator[Sentence]:
    """Unique sentences of one split, in a fixed order for a given seed."""
    seen: set[str] = set()
    for sentence in SentenceGenerator(f"{seed}-{split}"):
        if split_of(sentence) == split and sentence.transcript not in seen:
            seen.add(sentence.transcript)
            yield sentence


def _fix_articles(text: str) -> str:
    words = text.split(" ")
    for i, word in enumerate(words[:-1]):
        if word.lower() == "a" and words[i + 1][:1].lower() in _VOWELS:
            words[i] = word + "n"
    return " ".join(words)
