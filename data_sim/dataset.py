"""The torch dataset every training stage reads: clean utterances in, simulated mixtures out.

Each item is a function of (seed, epoch, index) alone, so DataLoader workers never repeat each
other's randomness and a resumed run sees the same data. A file that cannot be read is skipped
(one warning, recorded in the item's ``meta["skipped"]``) and another utterance is drawn in its
place: a training run never dies on one bad file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from data_sim.audio import AudioError, load_audio
from data_sim.index import CorpusIndex
from data_sim.mixer import MixConfig, Mixer
from data_sim.sources import AudioItem, load_rirs, load_source

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where a stage's material comes from and how it is mixed. Sources are folders, JSONL
    manifests, wav.scp files or index folders (see ``data_sim.sources.load_source``)."""

    speech: str = "data/starter/speech/train.jsonl"
    noise: str | None = "data/starter/noise/train.jsonl"
    rir: str | None = "data/starter/rir/train.jsonl"
    mix: MixConfig = field(default_factory=MixConfig)
    seed: int = 0
    # Items per epoch; None: one pass over the speech list.
    epoch_size: int | None = None
    # Utterances longer than this are left out, not cropped (a whole-utterance stage whose
    # judge or text caps have a length limit); None: all.
    max_seconds: float | None = None
    # Only utterances labelled with one of these languages (a manifest's ``language`` field);
    # None: all. English-only judges and text encoders need it on a multilingual corpus.
    languages: list[str] | None = None
    # Utterances shorter than this are left out; None: all.
    min_seconds: float | None = None
    # Only utterances whose quality score (a manifest's or index's ``dnsmos``) is at least
    # this; unscored ones are left out too. None: all.
    min_dnsmos: float | None = None
    # The order training reads items in (validation reads in index order): "shuffle", any item
    # after any other; "block", the speech source's tar shards in a random order, a contiguous
    # run of them per process, shuffled within windows of shuffle_window items, so that reads
    # stay sequential on network or spinning storage. Both are exactly resumable
    # (l3se.training.distributed.build_sampler).
    order: Literal["shuffle", "block"] = "shuffle"
    shuffle_window: int = 1000


def select_speech(items: Sequence[AudioItem], cfg: DataConfig) -> Sequence[AudioItem]:
    """The utterances ``cfg``'s duration window, ``languages`` and ``min_dnsmos`` keep (an
    index is filtered column-wise and stays an index); a ValueError when none."""
    if isinstance(items, CorpusIndex):
        kept = items.filter(cfg.languages, cfg.min_seconds, cfg.max_seconds, cfg.min_dnsmos)
    else:
        kept = [
            item for item in items
            if (cfg.max_seconds is None or (item.duration or 0.0) <= cfg.max_seconds)
            and (cfg.min_seconds is None or (item.duration or 0.0) >= cfg.min_seconds)
            and (cfg.languages is None or item.language in cfg.languages)
            and (cfg.min_dnsmos is None or (item.dnsmos or 0.0) >= cfg.min_dnsmos)
        ]
    if not len(kept):
        more = "".join(f", {k} {v}" for k, v in (("min_seconds", cfg.min_seconds),
                                                 ("min_dnsmos", cfg.min_dnsmos)) if v is not None)
        raise ValueError(f"{cfg.speech}: no utterance of at most {cfg.max_seconds} s in "
                         f"languages {cfg.languages}{more} (a manifest line's 'language' field)")
    return kept


def build_dataset(cfg: DataConfig) -> MixtureDataset:
    """Load the sources named by ``cfg`` (failing up front on missing files) into a dataset."""
    noises = load_source(cfg.noise) if cfg.noise and cfg.mix.p_noise > 0 else []
    rirs = load_rirs(cfg.rir, cfg.mix.p_reverb)
    speech = select_speech(load_source(cfg.speech), cfg)
    return MixtureDataset(speech, noises, rirs, cfg.mix, seed=cfg.seed, length=cfg.epoch_size)


class MixtureDataset(Dataset):
    """Items: ``{"noisy": Tensor[S], "clean": Tensor[S], "meta": dict}`` at ``cfg.sample_rate``.

    ``length`` sets the epoch size (default: one pass over ``speech``); index ``i`` uses
    utterance ``i % len(speech)`` with a fresh crop and mixture each epoch.
    """

    def __init__(
        self,
        speech: list[AudioItem],
        noises: list[AudioItem] = (),
        rirs: list[AudioItem] = (),
        cfg: MixConfig | None = None,
        seed: int = 0,
        length: int | None = None,
        max_tries: int = 16,
    ):
        if not speech:
            raise ValueError("MixtureDataset needs at least one speech file")
        # Per utterance, the tar shard it lives in, when the source is a shard index.
        self.shard_ids = getattr(speech, "shard_ids", None)
        # An index stays memory-mapped: a list of its rows would be Python objects per worker.
        self.speech = speech if isinstance(speech, CorpusIndex) else list(speech)
        self.cfg = cfg or MixConfig()
        self.mixer = Mixer(self.cfg, noises, rirs)
        self.seed = seed
        self.epoch = 0
        self.length = length or len(self.speech)
        self.max_tries = max_tries
        self._bad: set[str] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def read_groups(self) -> np.ndarray | None:
        """[len(self)] int: the shard each item's utterance is read from (the block order's
        blocks), or None when the speech source is not sharded (no ``shard_ids``)."""
        if self.shard_ids is None:
            return None
        return np.asarray(self.shard_ids)[np.arange(self.length) % len(self.speech)]

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict:
        rng = self.rng(index)
        skipped: list[tuple[str, str]] = []
        item = self.speech[index % len(self.speech)]
        for _ in range(self.max_tries):
            if item.location not in self._bad:
                try:
                    clean, offset = self._read(item, rng)
                    break
                except AudioError as e:
                    self._bad.add(item.location)
                    skipped.append((item.location, e.reason))
                    log.warning("skipping %s", e)
            item = self.speech[int(rng.integers(len(self.speech)))]
        else:
            raise RuntimeError(
                f"{self.max_tries} speech files in a row could not be read; last: {skipped[-1:]}"
            )
        mix = self.mixer(clean, rng)
        cropped = offset is not None
        meta = {
            "id": item.id,
            "offset": offset or 0.0,
            "text": None if cropped else item.text,
            "words": _words_in(item.words, offset, len(clean) / self.cfg.sample_rate),
            "speaker": item.speaker,
            "snr_db": mix.snr_db,
            "reverb": mix.reverb,
            "noise_id": mix.noise_id,
            "rir_id": mix.rir_id,
            "skipped": skipped + mix.skipped,
        }
        return {
            "noisy": torch.from_numpy(mix.noisy),
            "clean": torch.from_numpy(mix.target),
            "meta": meta,
        }

    def _read(self, item: AudioItem, rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
        """The whole utterance, or a random crop of ``segment_seconds`` (offset returned)."""
        seg = self.cfg.segment_seconds
        sr = self.cfg.sample_rate
        if seg is None or item.duration is None or item.duration <= seg:
            return load_audio(item.path, sr, reject_silent=True, byte_range=item.byte_range), None
        offset = float(rng.uniform(0.0, item.duration - seg))
        wav = load_audio(item.path, sr, offset=offset, duration=seg, reject_silent=True,
                         byte_range=item.byte_range)
        return wav, offset


def _words_in(words: list | None, offset: float | None, duration: float) -> list | None:
    """The word timings of a clip of ``duration`` s from ``offset`` (None: the whole utterance):
    a crop keeps the words wholly inside it, shifted to its start."""
    if words is None or offset is None:
        return words
    end = offset + duration
    return [(w, s - offset, e - offset) for w, s, e in words if s >= offset and e <= end]


def collate(batch: list[dict]) -> dict:
    """Pad to the longest item: ``noisy``/``clean`` [B, S], ``lengths`` LongTensor [B]."""
    lengths = torch.tensor([len(b["noisy"]) for b in batch], dtype=torch.long)
    n = int(lengths.max())
    noisy = torch.zeros(len(batch), n)
    clean = torch.zeros(len(batch), n)
    for i, b in enumerate(batch):
        noisy[i, : len(b["noisy"])] = b["noisy"]
        clean[i, : len(b["clean"])] = b["clean"]
    return {"noisy": noisy, "clean": clean, "lengths": lengths, "meta": [b["meta"] for b in batch]}
