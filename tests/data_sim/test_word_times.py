import json

import numpy as np
import pytest

from data_sim.audio import write_audio
from data_sim.dataset import MixtureDataset
from data_sim.mixer import MixConfig
from data_sim.sources import SourceError, load_source
from data_sim.word_times import add_word_times, estimate_word_times, transcript_words

SR = 16000
WORDS = ["I", "HAVE", "SEVEN", "BLUE", "BALLOONS"]
# (start, end) of each word's tone burst: durations only roughly follow the letter counts.
BURSTS = [(0.30, 0.42), (0.55, 0.85), (0.98, 1.40), (1.50, 1.78), (1.95, 2.60)]


def bursts(seconds=3.0, noise=1e-4):
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    wav = noise * rng.standard_normal(len(t))
    for i, (a, z) in enumerate(BURSTS):
        on = (t >= a) & (t < z)
        wav[on] += 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t[on])
    return wav.astype(np.float32)


def test_spans_land_on_their_bursts():
    est = estimate_word_times(bursts(), WORDS)
    assert [w for w, _, _ in est] == WORDS
    for (_, s, e), (a, z) in zip(est, BURSTS):
        overlap = max(0.0, min(e, z) - max(s, a))
        assert overlap >= 0.8 * (z - a), (s, e, a, z)
        assert s >= a - 0.03 and e <= z + 0.03, (s, e, a, z)
    assert all(e0 <= s1 for (_, _, e0), (_, s1, _) in zip(est, est[1:]))


def test_no_words_or_no_speech():
    assert estimate_word_times(bursts(), []) == []
    assert estimate_word_times(np.zeros(SR, np.float32), ["HELLO"]) == []
    assert transcript_words("well , HELLO -- there!") == ["well", "HELLO", "there!"]


@pytest.fixture
def manifest(tmp_path):
    write_audio(tmp_path / "audio" / "a.flac", bursts())
    write_audio(tmp_path / "audio" / "b.flac", bursts(2.7))
    rows = [{"id": "a", "path": "audio/a.flac", "text": " ".join(WORDS), "speaker": "s1"},
            {"id": "b", "path": "audio/b.flac"}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_add_word_times_writes_a_loadable_manifest(manifest, tmp_path):
    out = tmp_path / "elsewhere" / "out.jsonl"
    assert add_word_times(manifest, out) == 2
    items = load_source(out)  # paths still resolve from the new folder
    assert items[0].speaker == "s1" and items[0].text == " ".join(WORDS)
    assert [w for w, _, _ in items[0].words] == WORDS
    assert all(isinstance(t, float) for _, s, e in items[0].words for t in (s, e))
    assert items[1].words is None


def test_bad_words_field_is_a_source_error(manifest):
    row = json.loads(manifest.read_text().splitlines()[0])
    manifest.write_text(json.dumps({**row, "words": [["A", 0.1]]}) + "\n")
    with pytest.raises(SourceError, match="words"):
        load_source(manifest)


def test_crops_keep_the_words_inside_shifted(manifest, tmp_path):
    out = tmp_path / "words.jsonl"
    add_word_times(manifest, out)
    speech = load_source(out)[:1]
    whole = MixtureDataset(speech, cfg=MixConfig.clean_only(segment_seconds=None))
    assert whole[0]["meta"]["words"] == speech[0].words
    crops = MixtureDataset(speech, cfg=MixConfig.clean_only(segment_seconds=1.2), length=8)
    kept = []
    for i in range(8):
        meta = crops[i]["meta"]
        kept.append(len(meta["words"]))
        inside = [(w, s - meta["offset"], e - meta["offset"]) for w, s, e in speech[0].words
                  if meta["offset"] <= s and e <= meta["offset"] + 1.2]
        assert [w for w, _, _ in meta["words"]] == [w for w, _, _ in inside]
        assert np.allclose([t[1:] for t in meta["words"]], [t[1:] for t in inside])
        assert all(0 <= s <= e <= 1.2 + 1e-6 for _, s, e in meta["words"])
    assert 0 < max(kept) < len(WORDS)
