"""The offline starter corpus: a tiny real build (TTS programs, noise, pyroomacoustics)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from data_sim.audio import SAMPLE_RATE, audio_info, load_audio
from data_sim.starter import StarterConfig, build_starter_corpus
from data_sim.starter.corpus import engine_speakers, train_without_engine
from data_sim.starter.noises import NOISE_KINDS
from data_sim.starter.text import sentence_stream
from data_sim.starter.tts import TTSError, Voice, available_engines, synthesize
from l3se.config import from_dict

pytestmark = pytest.mark.skipif(
    len(available_engines()) < 2, reason="needs two of espeak-ng, flite, festival installed"
)

SPLITS = ("train", "test")


def tiny_config(**overrides) -> StarterConfig:
    base = dict(
        seed=7,
        speech_hours=75 / 3600,  # about 20 utterances
        test_fraction=0.3,
        train_speakers=6,
        test_speakers=3,
        utts_per_chapter=2,
        noise_minutes=len(NOISE_KINDS) * 2 * 2.0 / 60,  # 2 s clips: 1 test + 1 train per kind
        noise_clip_seconds=2.0,
        noise_test_fraction=0.5,
        n_rirs=6,
        rir_test_fraction=0.34,
        rt60_range=(0.2, 0.6),
        workers=2,
    )
    return StarterConfig(**(base | overrides))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("starter")
    return out, build_starter_corpus(out, tiny_config(), progress=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "starter.json"
    }


def test_speech_layout_matches_manifests(built):
    out, summary = built
    speakers = json.loads((out / "speech" / "speakers.json").read_text())
    for split in SPLITS:
        folder = out / "speech" / split
        rows = read_jsonl(out / "speech" / f"{split}.jsonl")
        assert len(rows) == summary["speech"][split]["utterances"] > 0
        on_disk = {str(p.relative_to(out / "speech")) for p in folder.rglob("*.flac")}
        assert on_disk == {r["path"] for r in rows}
        transcripts = {}
        for trans in folder.rglob("*.trans.txt"):
            spk, chapter = trans.parent.parent.name, trans.parent.name
            assert trans.name == f"{spk}-{chapter}.trans.txt"
            for line in trans.read_text().splitlines():
                uid, text = line.split(" ", 1)
                transcripts[uid] = text
        for r in rows:
            spk, chapter, utt = r["id"].split("-")
            assert re.fullmatch(r"\d+-\d+-\d{4}", r["id"])
            assert r["path"] == f"{split}/{spk}/{chapter}/{r['id']}.flac"
            assert r["speaker"] == int(spk) and speakers[spk]["split"] == split
            assert r["sample_rate"] == SAMPLE_RATE
            assert transcripts[r["id"]] == r["text"]
            assert re.fullmatch(r"[A-Z' ]+", r["text"]) and 5 <= len(r["text"].split()) <= 15
            info = audio_info(out / "speech" / r["path"])
            assert info.sample_rate == SAMPLE_RATE and info.channels == 1
            assert abs(info.duration - r["duration"]) < 1e-3
        assert len(transcripts) == len(rows)
    total = sum(summary["speech"][s]["hours"] for s in SPLITS) * 3600
    assert 75 <= total < 75 + 16  # stops at the first utterance past the target


def test_speech_is_audible_and_paced_like_speech(built):
    out, _ = built
    for split in SPLITS:
        for r in read_jsonl(out / "speech" / f"{split}.jsonl"):
            wav = load_audio(out / "speech" / r["path"])
            rms_db = 20 * np.log10(np.sqrt(np.mean(wav**2)))
            assert rms_db > -40, (r["id"], rms_db)
            assert 0.15 <= r["duration"] / len(r["text"].split()) <= 1.2, r
            # trimmed: a margin of silence, but not much, at each end
            edge = int(0.05 * SAMPLE_RATE)
            assert np.abs(wav[:edge]).max() < 0.5 * np.abs(wav).max()
            assert np.abs(wav).max() > 0.25


def test_speakers_engines_and_held_out_test(built):
    out, summary = built
    speakers = json.loads((out / "speech" / "speakers.json").read_text())
    used = {s: {r["speaker"] for r in read_jsonl(out / "speech" / f"{s}.jsonl")} for s in SPLITS}
    assert len(used["train"]) >= 5 and len(used["test"]) >= 2
    assert not used["train"] & used["test"]
    engines = {speakers[str(s)]["engine"] for s in used["train"] | used["test"]}
    assert len(engines) >= 2
    voices = {
        split: {
            tuple(speakers[str(s)][k] for k in ("engine", "name", "pitch", "rate")) for s in ids
        }
        for split, ids in used.items()
    }
    assert not voices["train"] & voices["test"]
    texts = {s: {r["text"] for r in read_jsonl(out / "speech" / f"{s}.jsonl")} for s in SPLITS}
    assert not texts["train"] & texts["test"]


def test_training_speech_without_one_engines_voices(built, tmp_path):
    out, _ = built
    speech = tmp_path / "speech"  # the built corpus stays as built, for the digest tests
    speech.mkdir()
    for name in ("speakers.json", "train.jsonl"):
        shutil.copy(out / "speech" / name, speech)
    speakers = json.loads((speech / "speakers.json").read_text())
    train = read_jsonl(speech / "train.jsonl")
    engine = speakers[str(train[0]["speaker"])]["engine"]
    held_out = engine_speakers(speech, engine)
    assert held_out == {s for s, v in speakers.items() if v["engine"] == engine}
    kept = read_jsonl(train_without_engine(speech, engine))
    assert kept == [r for r in train if str(r["speaker"]) not in held_out]
    assert 0 < len(kept) < len(train)
    with pytest.raises(ValueError, match="voiced by 'mbrola'; its engines: "):
        engine_speakers(speech, "mbrola")


def test_noise_kinds_present_and_coloured_slopes(built):
    out, _ = built
    slopes = {}
    for split in SPLITS:
        rows = read_jsonl(out / "noise" / f"{split}.jsonl")
        assert {r["kind"] for r in rows} == set(NOISE_KINDS)
        on_disk = {str(p.relative_to(out / "noise")) for p in (out / "noise" / split).glob("*.wav")}
        assert on_disk == {r["path"] for r in rows}
        for r in rows:
            assert r["path"] == f"{split}/{r['id']}.wav" and r["id"].startswith(r["kind"] + "_")
            x = load_audio(out / "noise" / r["path"])
            assert (
                abs(len(x) / SAMPLE_RATE - r["duration"]) < 1e-3 and abs(r["duration"] - 2.0) < 1e-3
            )
            assert np.sqrt(np.mean(x**2)) > 1e-3, r["id"]
            f, p = signal.welch(x, SAMPLE_RATE, nperseg=2048)
            band = (f >= 100) & (f <= 4000)
            slopes[r["kind"]] = np.polyfit(np.log2(f[band]), 10 * np.log10(p[band]), 1)[0]
        for kind, expected in (("white", 0.0), ("pink", -3.0), ("brown", -6.0), ("blue", 3.0)):
            assert abs(slopes[kind] - expected) < 1.0, (kind, slopes[kind])
    train = load_audio(out / "noise" / "train" / "pink_0000.wav")
    test = load_audio(out / "noise" / "test" / "pink_0000.wav")
    assert not np.allclose(train, test)  # held-out clips are other draws


def test_rirs_direct_peak_and_rt60(built):
    out, summary = built
    assert [len(read_jsonl(out / "rir" / f"{s}.jsonl")) for s in SPLITS] == [4, 2]
    for split in SPLITS:
        for r in read_jsonl(out / "rir" / f"{split}.jsonl"):
            h = load_audio(out / "rir" / r["path"])
            assert r["path"] == f"{split}/{r['id']}.wav"
            assert np.argmax(np.abs(h)) < 0.005 * SAMPLE_RATE
            assert np.abs(h).max() > 0.9
            assert 0.2 <= r["rt60"] <= 0.6
            assert 0.4 * r["rt60"] <= r["rt60_measured"] <= 2.5 * r["rt60"], r
            assert len(r["room"]) == 3 and all(2.4 <= d <= 10 for d in r["room"])
            assert 0.1 <= r["duration"] <= 2.5 * r["rt60"]  # truncated at about its RT60


def test_rerun_skips_existing_work(built):
    out, summary = built
    before = tree_digest(out)
    start = time.perf_counter()
    again = build_starter_corpus(out, tiny_config(), progress=False)
    assert time.perf_counter() - start < 10
    assert tree_digest(out) == before
    for bank in ("speech", "noise", "rir"):
        assert again[bank] == summary[bank]
    assert json.loads((out / "starter.json").read_text())["speech"] == summary["speech"]


def test_resume_after_interruption_and_config_guard(built, tmp_path):
    out, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "starter.json").unlink()
    removed = sorted((copy / "speech" / "train").rglob("*.flac"))[-1]
    removed.unlink()
    (copy / "rir" / "test" / "rir_0001.wav").unlink()
    build_starter_corpus(copy, tiny_config(workers=1), progress=False)
    assert tree_digest(copy) == tree_digest(out)
    with pytest.raises(ValueError, match="seed"):
        build_starter_corpus(copy, tiny_config(seed=8), progress=False)


def test_same_seed_same_corpus(built, tmp_path):
    out, _ = built
    speech_only = tiny_config(workers=1, noise_minutes=0, n_rirs=0)
    build_starter_corpus(tmp_path, speech_only, progress=False)
    for split in SPLITS:
        assert (tmp_path / "speech" / f"{split}.jsonl").read_text() == (
            out / "speech" / f"{split}.jsonl"
        ).read_text()
    assert tree_digest(tmp_path / "speech") == tree_digest(out / "speech")
    first = [s.transcript for s, _ in zip(sentence_stream(7, "train"), range(50))]
    assert first == [s.transcript for s, _ in zip(sentence_stream(7, "train"), range(50))]
    assert first != [s.transcript for s, _ in zip(sentence_stream(8, "train"), range(50))]


def test_tts_errors_name_the_engine(monkeypatch):
    with pytest.raises(TTSError, match="espeak-ng"):
        synthesize(Voice("espeak-ng", "zz+nonexistent"), "hello there")
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "flite" else "/usr/bin/x")
    with pytest.warns(RuntimeWarning, match="flite"):
        assert available_engines(["espeak-ng", "flite"]) == ["espeak-ng"]


def test_config_loads_from_plain_values():
    cfg = from_dict(
        StarterConfig,
        {"seed": 3, "engines": ["flite"], "engine_weights": [1.0], "rt60_range": [0.2, 0.5]},
    )
    assert cfg.rt60_range == (0.2, 0.5) and cfg.engines == ["flite"]
    with pytest.raises(ValueError, match="engine_weights"):
        StarterConfig(engines=["flite"])
