"""The offline starter corpus: TTS speech, procedural noise and simulated RIRs, on local disk.

Layout under OUT (the data loaders depend on it)::

    speech/{train,test}/{spk}/{chapter}/{spk}-{chapter}-{utt:04d}.flac   LibriSpeech-style ids
    speech/{train,test}/{spk}/{chapter}/{spk}-{chapter}.trans.txt        "ID TRANSCRIPT" lines
    speech/{train,test}.jsonl     {"id","path","duration","text","speaker","sample_rate"}
    speech/speakers.json          speaker id -> voice (engine, name, pitch, rate, split)
    noise/{train,test}/{kind}_{i:04d}.wav,  noise/{train,test}.jsonl  {"id","path","duration","kind"}
    rir/{train,test}/rir_{i:04d}.wav,       rir/{train,test}.jsonl
        {"id","path","duration","rt60","rt60_measured","room","distance"}
    starter.json                  config, counts and durations; written last, marks completion

Manifest paths are relative to the manifest's folder. Test speech comes from held-out voice
configurations (speakers) and sentences; test noise clips and RIRs are separate draws.

Every file is a pure function of the seed and its index, so a build is deterministic, and a
re-run skips the files that exist (audio writes are atomic) and removes stale ones that the
current config no longer lists. Speech is synthesised in a fixed order until each split holds
its share of ``speech_hours``.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_sim.audio import SAMPLE_RATE, AudioError, audio_info, load_audio, write_audio
from data_sim.files import atomic_write
from data_sim.starter.noises import NOISE_KINDS, generate_noise
from data_sim.starter.rirs import measure_rt60, sample_room, simulate_rir
from data_sim.starter.text import sentence_stream
from data_sim.starter.tts import ENGINES, Voice, available_engines, base_voices, finish, synthesize

SPLITS = ("train", "test")
FIRST_SPEAKER_ID = 100
# Random streams: one per bank, so that e.g. changing the noise config leaves speech untouched.
_SPEAKERS, _SPEECH, _NOISE, _RIR = range(4)
# Pitch shift (semitones) and rate ranges of the speakers. Resampling (flite, festival) moves
# formants along with pitch, so their range is kept narrower than espeak-ng's native pitch.
_PITCH_ST = {"espeak-ng": 4.0, "flite": 2.0, "festival": 2.0}
_RATE = (0.85, 1.2)
# Config keys that change what a given file holds; the rest only change how many files there are.
_CONTENT_KEYS = (
    "seed",
    "train_speakers",
    "test_speakers",
    "utts_per_chapter",
    "engine_weights",
    "noise_clip_seconds",
    "rt60_range",
    "rir_max_order",
)
_FINGERPRINT = ".starter-fingerprint.json"
# 15 words at the slowest rate take about 8 s; a bound on one utterance sizes work chunks.
_LONGEST_UTTERANCE_S = 15.0


@dataclass
class StarterConfig:
    seed: int = 0
    speech_hours: float = 2.0
    test_fraction: float = 0.1  # share of speech_hours spoken by the held-out test speakers
    train_speakers: int = 40
    test_speakers: int = 10
    utts_per_chapter: int = 50
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    # Share of the speakers (and so of the speech) given to each engine in `engines`.
    engine_weights: list[float] = field(default_factory=lambda: [0.4, 0.3, 0.3])
    noise_minutes: float = 30.0  # train + test, spread evenly over noise_kinds
    noise_clip_seconds: float = 10.0
    noise_kinds: list[str] = field(default_factory=lambda: list(NOISE_KINDS))
    noise_test_fraction: float = 0.2
    n_rirs: int = 500  # train + test
    rir_test_fraction: float = 0.1
    rt60_range: tuple[float, float] = (0.15, 1.0)  # seconds, target RT60 drawn uniformly
    # Image-source order cap: cost grows with its cube; 100 keeps the worst room under ~2 s.
    rir_max_order: int = 100
    workers: int = 2

    def __post_init__(self) -> None:
        for name in ("test_fraction", "noise_test_fraction", "rir_test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("speech_hours", "noise_minutes", "n_rirs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("train_speakers", "utts_per_chapter", "workers", "rir_max_order"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.test_fraction > 0 and self.test_speakers < 1:
            raise ValueError("test_fraction > 0 needs test_speakers >= 1")
        if self.noise_clip_seconds <= 0:
            raise ValueError(f"noise_clip_seconds must be > 0, got {self.noise_clip_seconds}")
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown or not self.engines:
            raise ValueError(
                f"engines must be a non-empty list of {list(ENGINES)}, got {self.engines}"
            )
        if len(self.engine_weights) != len(self.engines) or min(self.engine_weights) < 0:
            raise ValueError("engine_weights needs one weight >= 0 for each of engines")
        unknown = [k for k in self.noise_kinds if k not in NOISE_KINDS]
        if unknown:
            raise ValueError(f"unknown noise kinds {unknown}; known: {list(NOISE_KINDS)}")
        lo, hi = self.rt60_range
        if not 0 < lo <= hi:
            raise ValueError(f"rt60_range must be 0 < low <= high, got {self.rt60_range}")


@dataclass(frozen=True)
class Speaker:
    id: int
    split: str
    voice: Voice


def build_starter_corpus(out: Path, cfg: StarterConfig, progress: bool = True) -> dict:
    """Build (or finish building) the starter corpus in ``out``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    engines = available_engines(cfg.engines)
    if cfg.speech_hours > 0 and not engines:
        raise RuntimeError(f"no TTS engine installed among {cfg.engines}")
    _check_fingerprint(out, cfg, engines)
    (out / "starter.json").unlink(missing_ok=True)  # incomplete until rewritten at the end
    timings = {}
    with _Mapper(cfg.workers) as run:
        t = time.perf_counter()
        speech = _build_speech(out / "speech", cfg, engines, run, progress)
        timings["speech"] = time.perf_counter() - t
        t = time.perf_counter()
        noise = _build_noise(out / "noise", cfg, run, progress)
        timings["noise"] = time.perf_counter() - t
        t = time.perf_counter()
        rir = _build_rirs(out / "rir", cfg, run, progress)
        timings["rir"] = time.perf_counter() - t
    summary = {
        "config": asdict(cfg),
        "engines": engines,
        "speech": speech,
        "noise": noise,
        "rir": rir,
        "build_seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    atomic_write(out / "starter.json", json.dumps(summary, indent=2) + "\n")
    return summary


def make_speakers(cfg: StarterConfig, engines: list[str]) -> list[Speaker]:
    """Train speakers then test speakers, engines shared out by ``engine_weights``.

    Base voices of an engine are dealt without repeats until the engine runs out, so test
    speakers of espeak-ng (264 base voices) are accent/variant pairs never heard in training;
    flite and festival, with few voices, reuse them with other pitch and rate.
    """
    rng = np.random.default_rng([cfg.seed, _SPEAKERS])
    weights = [w for e, w in zip(cfg.engines, cfg.engine_weights) if e in engines]
    pools = {e: itertools.cycle(rng.permutation(base_voices(e)).tolist()) for e in engines}
    speakers: list[Speaker] = []
    for split, count in (("train", cfg.train_speakers), ("test", cfg.test_speakers)):
        for engine in _apportion(engines, weights, count):
            span = _PITCH_ST[engine]
            voice = Voice(
                engine,
                next(pools[engine]),
                pitch=round(float(rng.uniform(-span, span)), 2),
                rate=round(float(rng.uniform(*_RATE)), 3),
            )
            speakers.append(Speaker(FIRST_SPEAKER_ID + len(speakers), split, voice))
    return speakers


# ---------------------------------------------------------------------------------------- speech


@dataclass(frozen=True)
class _SpeechJob:
    path: str
    voice: Voice
    text: str
    seed: tuple[int, ...]


def _speech_job(job: _SpeechJob) -> float:
    """Synthesise one utterance unless its file exists; returns its duration (s)."""
    path = Path(job.path)
    if path.is_file():
        try:
            return audio_info(path).duration
        except AudioError:
            pass  # an unreadable leftover: make it again
    wav = finish(synthesize(job.voice, job.text), np.random.default_rng(job.seed))
    write_audio(path, wav)
    return len(wav) / SAMPLE_RATE


def _build_speech(root: Path, cfg: StarterConfig, engines: list[str], run, progress: bool) -> dict:
    speakers = make_speakers(cfg, engines) if engines else []
    atomic_write(
        root / "speakers.json",
        json.dumps(
            {str(s.id): {"split": s.split, **s.voice.describe()} for s in speakers}, indent=2
        ),
    )
    summary = {}
    for split_idx, split in enumerate(SPLITS):
        share = cfg.test_fraction if split == "test" else 1.0 - cfg.test_fraction
        target_s = cfg.speech_hours * 3600.0 * share
        split_speakers = [s for s in speakers if s.split == split]
        rows = []
        if target_s > 0:
            jobs = _utterances(root, split, split_idx, split_speakers, cfg)
            rows = _synthesise_until(jobs, target_s, run, cfg.workers, progress, f"speech {split}")
        _write_speech_split(root, split, rows)
        by_engine = Counter(r["engine"] for r in rows)
        summary[split] = {
            "utterances": len(rows),
            "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
            "speakers": len({r["speaker"] for r in rows}),
            "utterances_per_engine": dict(sorted(by_engine.items())),
        }
    return summary


def _utterances(
    root: Path, split: str, split_idx: int, speakers: list[Speaker], cfg: StarterConfig
) -> Iterator[dict]:
    """The split's endless, fixed sequence of utterances, speakers taking turns."""
    order = np.random.default_rng([cfg.seed, _SPEECH, split_idx]).permutation(len(speakers))
    sentences = sentence_stream(cfg.seed, split)
    for k in itertools.count():
        spk = speakers[order[k % len(speakers)]]
        n = k // len(speakers)  # this speaker's n-th utterance
        chapter_no, utt = divmod(n, cfg.utts_per_chapter)
        if chapter_no >= 1000:
            raise ValueError(
                f"speaker {spk.id} needs over 1000 chapters: raise utts_per_chapter or the speakers"
            )
        chapter = spk.id * 1000 + chapter_no
        uid = f"{spk.id}-{chapter}-{utt:04d}"
        sentence = next(sentences)
        path = f"{split}/{spk.id}/{chapter}/{uid}.flac"
        yield {
            "id": uid,
            "path": path,
            "text": sentence.transcript,
            "speaker": spk.id,
            "engine": spk.voice.engine,
            "job": _SpeechJob(
                str(root / path), spk.voice, sentence.text, (cfg.seed, _SPEECH, split_idx, k)
            ),
        }


def _synthesise_until(
    jobs: Iterator[dict], target_s: float, run, workers: int, progress: bool, desc: str
) -> list[dict]:
    """Run jobs in order until their durations add up to ``target_s``; the rows kept.

    A chunk never holds more jobs than could be needed (utterances are assumed no longer than
    ``_LONGEST_UTTERANCE_S``), so no work is thrown away and a re-run of a finished split
    synthesises nothing.
    """
    rows: list[dict] = []
    total = 0.0
    bar = tqdm(
        total=target_s, desc=desc, disable=not progress,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of speech [{elapsed}<{remaining}]",
    )
    while total < target_s:
        size = min(8 * workers, max(1, math.ceil((target_s - total) / _LONGEST_UTTERANCE_S)))
        chunk = list(itertools.islice(jobs, size))
        # Every result is awaited, so no worker still writes if an overshoot is pruned.
        for row, duration in zip(chunk, list(run(_speech_job, [r["job"] for r in chunk]))):
            if total >= target_s:
                break
            row["duration"] = round(duration, 4)
            rows.append(row)
            total += duration
            bar.update(min(duration, target_s - bar.n))
    bar.close()
    return rows


def _write_speech_split(root: Path, split: str, rows: list[dict]) -> None:
    chapters: dict[Path, list[str]] = {}
    for r in rows:
        chapters.setdefault(Path(r["path"]).parent, []).append(f"{r['id']} {r['text']}")
    keep = {r["path"] for r in rows}
    for chapter_dir, lines in chapters.items():
        trans = chapter_dir / f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt"
        atomic_write(root / trans, "\n".join(lines) + "\n")
        keep.add(str(trans))
    fields = ("id", "path", "duration", "text", "speaker")
    entries = [{k: r[k] for k in fields} | {"sample_rate": SAMPLE_RATE} for r in rows]
    _write_manifest(root / f"{split}.jsonl", entries)
    _prune(root, split, keep, ("*/*/*.flac", "*/*/*.trans.txt"))


def engine_speakers(speech: Path, engine: str) -> set[str]:
    """Ids of the speakers of ``speech/speakers.json`` voiced by ``engine``; a ValueError naming
    the engines there when it has none."""
    voices = json.loads((speech / "speakers.json").read_text())
    found = {str(spk) for spk, voice in voices.items() if voice["engine"] == engine}
    if not found:
        engines = sorted({voice["engine"] for voice in voices.values()})
        raise ValueError(f"no speaker of {speech} is voiced by {engine!r}; its engines: "
                         f"{', '.join(engines)}")
    return found


def train_without_engine(speech: Path, engine: str) -> Path:
    """``speech/train_without_<engine>.jsonl``: the training utterances of every voice but
    ``engine``'s, for measuring how a model trained without them does on them."""
    held_out = engine_speakers(speech, engine)
    rows = [json.loads(line) for line in (speech / "train.jsonl").read_text().splitlines()]
    kept = [r for r in rows if str(r["speaker"]) not in held_out]
    if not kept:
        raise ValueError(f"every training voice of {speech} is {engine}'s: holding them out "
                         "leaves nothing to train on")
    path = speech / f"train_without_{engine}.jsonl"
    _write_manifest(path, kept)
    return path


# ----------------------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class _NoiseJob:
    path: str
    kind: str
    seed: tuple[int, ...]
    seconds: float


def _noise_job(job: _NoiseJob) -> float:
    if not Path(job.path).is_file():
        write_audio(
            job.path, generate_noise(job.kind, np.random.default_rng(job.seed), job.seconds)
        )
    return audio_info(job.path).duration


def _build_noise(root: Path, cfg: StarterConfig, run, progress: bool) -> dict:
    kinds = list(cfg.noise_kinds)
    if "babble" in kinds and not available_engines(["espeak-ng"]):  # babble talkers are espeak-ng
        kinds.remove("babble")
    clips = cfg.noise_minutes * 60.0 / cfg.noise_clip_seconds / max(1, len(kinds))
    summary = {}
    for split_idx, split in enumerate(SPLITS):
        share = cfg.noise_test_fraction if split == "test" else 1.0 - cfg.noise_test_fraction
        per_kind = max(1, round(clips * share)) if clips * share > 0 else 0
        entries, jobs = [], []
        for kind in kinds:
            kind_idx = list(NOISE_KINDS).index(kind)  # fixed, whatever kinds the config lists
            for i in range(per_kind):
                name = f"{kind}_{i:04d}"
                entries.append({"id": name, "path": f"{split}/{name}.wav", "kind": kind})
                seed = (cfg.seed, _NOISE, split_idx, kind_idx, i)
                jobs.append(
                    _NoiseJob(str(root / split / f"{name}.wav"), kind, seed, cfg.noise_clip_seconds)
                )
        durations = run(_noise_job, jobs)
        for entry, duration in zip(
            entries, tqdm(durations, total=len(jobs), desc=f"noise {split}", disable=not progress)
        ):
            entry["duration"] = round(duration, 4)
        _write_manifest(
            root / f"{split}.jsonl",
            [{k: e[k] for k in ("id", "path", "duration", "kind")} for e in entries],
        )
        _prune(root, split, {e["path"] for e in entries}, ("*.wav",))
        summary[split] = {
            "clips": len(entries),
            "minutes": round(sum(e["duration"] for e in entries) / 60, 3),
            "kinds": dict(Counter(e["kind"] for e in entries)),
        }
    return summary


# ------------------------------------------------------------------------------------------ rirs


@dataclass(frozen=True)
class _RirJob:
    path: str
    seed: tuple[int, ...]
    rt60_range: tuple[float, float]
    max_order: int


def _rir_job(job: _RirJob) -> dict:
    """Simulate one RIR unless its file exists; its metadata either way (measured on the file)."""
    rng = np.random.default_rng(job.seed)
    room = sample_room(rng, job.rt60_range, job.max_order)
    if not Path(job.path).is_file():
        write_audio(job.path, simulate_rir(room, int(rng.integers(2**32))))
    h = load_audio(job.path)
    return {
        "duration": round(len(h) / SAMPLE_RATE, 4),
        "rt60": room.rt60,
        "rt60_measured": round(measure_rt60(h), 4),
        "room": list(room.dims),
        "distance": round(float(np.linalg.norm(np.subtract(room.source, room.mic))), 3),
    }


def _build_rirs(root: Path, cfg: StarterConfig, run, progress: bool) -> dict:
    n_test = round(cfg.n_rirs * cfg.rir_test_fraction)
    summary = {}
    for split_idx, (split, count) in enumerate(zip(SPLITS, (cfg.n_rirs - n_test, n_test))):
        jobs = [
            _RirJob(
                str(root / split / f"rir_{i:04d}.wav"),
                (cfg.seed, _RIR, split_idx, i),
                tuple(cfg.rt60_range),
                cfg.rir_max_order,
            )
            for i in range(count)
        ]
        results = tqdm(run(_rir_job, jobs), total=count, desc=f"rir {split}", disable=not progress)
        entries = [
            {"id": f"rir_{i:04d}", "path": f"{split}/rir_{i:04d}.wav", **meta}
            for i, meta in enumerate(results)
        ]
        _write_manifest(root / f"{split}.jsonl", entries)
        _prune(root, split, {e["path"] for e in entries}, ("rir_*.wav",))
        summary[split] = {
            "count": count,
            "rt60_mean": round(float(np.mean([e["rt60"] for e in entries])), 4)
            if entries
            else None,
            "rt60_measured_mean": round(float(np.mean([e["rt60_measured"] for e in entries])), 4)
            if entries
            else None,
        }
    return summary


# ---------------------------------------------------------------------------------------- shared


class _Mapper:
    """``run(fn, jobs)``: ``fn(job)`` for each job, in order, over ``workers`` processes.

    A job whose output file (``job.path``) exists runs here, since it only reads metadata; so a
    finished bank is re-read without starting the pool.
    """

    def __init__(self, workers: int):
        self._workers = workers
        self._pool = None

    def __call__(self, fn: Callable, jobs: Iterable) -> Iterator:
        jobs = list(jobs)
        missing = [not Path(job.path).is_file() for job in jobs]
        made = self._map(fn, [job for job, m in zip(jobs, missing) if m])
        for job, m in zip(jobs, missing):
            yield next(made) if m else fn(job)

    def _map(self, fn: Callable, jobs: list) -> Iterator:
        if self._workers == 1 or len(jobs) < 2:
            return map(fn, jobs)
        if self._pool is None:
            # spawn: forking a parent that holds torch/tqdm threads can deadlock the children.
            self._pool = multiprocessing.get_context("spawn").Pool(self._workers)
        return self._pool.imap(fn, jobs)

    def __enter__(self) -> _Mapper:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool:
            self._pool.terminate() if exc[0] else self._pool.close()
            self._pool.join()


def _apportion(engines: list[str], weights: list[float], count: int) -> list[str]:
    """``count`` engine slots in proportion to ``weights`` (largest remainder), interleaved."""
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"engine_weights of the installed engines {engines} are all zero")
    exact = [count * w / total for w in weights]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: count - sum(counts)]:
        counts[i] += 1
    slots = [(j / c, e) for e, c in zip(engines, counts) for j in range(c)]
    return [e for _, e in sorted(slots, key=lambda s: s[0])]


def _check_fingerprint(out: Path, cfg: StarterConfig, engines: list[str]) -> None:
    """Refuse to resume into a folder built with content-changing settings that differ."""
    current = {k: getattr(cfg, k) for k in _CONTENT_KEYS} | {"engines": engines}
    current = json.loads(json.dumps(current))  # tuples -> lists, as read back
    path = out / _FINGERPRINT
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(
            k for k in current.keys() | previous.keys() if current.get(k) != previous.get(k)
        )
        if changed:
            raise ValueError(
                f"{out} holds a starter corpus built with other {', '.join(changed)} "
                f"({', '.join(f'{k}={previous.get(k)!r}' for k in changed)}); use a new folder"
            )
    else:
        atomic_write(path, json.dumps(current, indent=2) + "\n")


def _prune(root: Path, split: str, keep: set[str], patterns: tuple[str, ...]) -> None:
    """Delete files of ``patterns`` under root/split that the manifest does not list."""
    base = root / split
    for pattern in patterns:
        for path in base.glob(pattern):
            if str(path.relative_to(root)) not in keep:
                path.unlink()
    for part in base.rglob(".*.part"):  # temporaries of a killed writer
        part.unlink()
    for folder in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _write_manifest(path: Path, entries: list[dict]) -> None:
    atomic_write(path, "".join(json.dumps(e) + "\n" for e in entries))
