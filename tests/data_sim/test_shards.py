"""Tar shards: Emilia's layouts indexed in place or re-packed, l3se's own shards written and
re-indexed, damage skipped and reported, interrupted runs resumed."""

import json
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf

from data_sim import shards
from data_sim.audio import load_audio, resample
from data_sim.dataset import DataConfig, MixtureDataset, select_speech
from data_sim.index import CorpusIndex
from data_sim.mixer import MixConfig
from data_sim.shards import index_shards, write_shards
from data_sim.sources import SourceError, load_source, read_rir_folder
from tests.conftest import synthetic_rir
from tests.data_sim.corpora import (
    EMILIA_SR,
    add_member,
    emilia_gz_batch,
    emilia_shards,
    mp3_bytes,
)

CLEAN = MixConfig(p_noise=0.0, p_reverb=0.0, segment_seconds=None, level_range_db=(-20, -20))


def columns(index: CorpusIndex) -> dict:
    """Every column of an index, strings included, as plain lists."""
    cols = {k: np.nan_to_num(index.column(k), nan=-1.0).tolist() for k in index._num}
    return cols | {k: index.strings(k) for k in ("id", "text", "speaker")}


def snr_db(got: np.ndarray, want: np.ndarray) -> float:
    """How closely ``got`` matches ``want`` up to a gain, in dB."""
    g = np.dot(got, want) / np.dot(got, got)
    return float(10 * np.log10(np.sum(want**2) / np.sum((g * got - want) ** 2)))


def clean_of(ds: MixtureDataset, i: int) -> np.ndarray:
    """Item i's clean signal with the level gain taken out (unit peak)."""
    x = ds[i]["clean"].numpy()
    return x / np.abs(x).max()


def test_emilia_shards_indexed_in_place(tmp_path):
    written = emilia_shards(tmp_path)
    summary = index_shards([str(tmp_path / "Emilia" / "*" / "*.tar")], tmp_path / "idx")
    assert (summary.rows, summary.shards, summary.skipped) == (12, 4, 0)
    index = CorpusIndex(tmp_path / "idx")
    assert index.strings("id") == list(written)  # shard order, member order
    for item in index:
        row, x = written[item.id]
        assert item.duration == pytest.approx(row["duration"])
        assert (item.text, item.speaker, item.language) == (
            row["text"], row["speaker"], row["language"])
        assert item.dnsmos == pytest.approx(row["dnsmos"]) and item.sample_rate == EMILIA_SR
        with open(item.path, "rb") as f:  # the row points at the member's bytes
            f.seek(item.byte_offset)
            assert f.read(item.byte_size) == mp3_bytes(x)
    assert index.shard_ids.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert [i.id for i in index.filter(languages=["zh"], min_seconds=1.2, min_dnsmos=3.0)] == [
        "ZH_B00000_S00000_W000001", "ZH_B00000_S00000_W000002",
        "ZH_B00001_S00000_W000001", "ZH_B00001_S00000_W000002"]
    cfg = DataConfig(languages=["en"], max_seconds=1.2)
    assert [i.id for i in select_speech(index, cfg)] == [
        "EN_B00000_S00000_W000000", "EN_B00001_S00000_W000000"]


def test_mixture_dataset_reads_mp3_members(tmp_path):
    written = emilia_shards(tmp_path, langs=("EN",), shards=1)
    index_shards([str(tmp_path / "Emilia" / "EN" / "EN-B000000.tar")], tmp_path / "idx")
    index = load_source(tmp_path / "idx")
    ds = MixtureDataset(index, cfg=CLEAN)
    for i, item in enumerate(index):
        # The member decodes exactly as the same MP3 as a file does ...
        (tmp_path / "one.mp3").write_bytes(mp3_bytes(written[item.id][1]))
        from_file = load_audio(tmp_path / "one.mp3")
        got = clean_of(ds, i)
        assert np.allclose(got, from_file / np.abs(from_file).max(), atol=1e-5)
        # ... and within MP3's error of the signal that was encoded.
        source = resample(written[item.id][1], EMILIA_SR, 16000)
        assert len(got) == len(source) and snr_db(got, source) > 15
    # A crop decodes only what it needs and lands where its offset says.
    crops = MixtureDataset(index, cfg=MixConfig(p_noise=0.0, p_reverb=0.0, segment_seconds=0.5,
                                                level_range_db=(-20, -20)))
    item = crops[2]
    (tmp_path / "one.mp3").write_bytes(mp3_bytes(written[index[2].id][1]))
    whole, _ = sf.read(tmp_path / "one.mp3", dtype="float32")  # one read: libsndfile's is right
    start = round(item["meta"]["offset"] * EMILIA_SR)
    want = resample(whole[start:start + EMILIA_SR // 2], EMILIA_SR, 16000)
    assert start > 0 and snr_db(item["clean"].numpy(), want) > 60


def test_a_member_damaged_after_indexing_is_skipped_alone(tmp_path):
    emilia_shards(tmp_path, langs=("EN",), shards=1)
    index_shards([str(tmp_path / "Emilia" / "EN" / "EN-B000000.tar")], tmp_path / "idx")
    index = CorpusIndex(tmp_path / "idx")
    first = index[0]
    with open(first.path, "r+b") as f:
        f.seek(first.byte_offset)
        f.write(bytes(first.byte_size))
    ds = MixtureDataset(index, cfg=CLEAN)
    meta = ds[0]["meta"]
    assert meta["id"] != first.id
    assert [path for path, _ in meta["skipped"]] == [f"{first.path}@{first.byte_offset}"]
    # The other members of the same tar are still read.
    assert ds[1]["meta"]["id"] == index[1].id and ds[1]["meta"]["skipped"] == []


def test_damaged_members_are_skipped_and_reported(tmp_path):
    emilia_shards(tmp_path, langs=("EN",), shards=2)
    folder = tmp_path / "Emilia" / "EN"
    with tarfile.open(folder / "EN-B000002.tar", "w") as tar:  # garbage where an mp3 should be
        add_member(tar, "bad.mp3", os.urandom(3000))
        add_member(tar, "bad.json", json.dumps({"id": "bad", "duration": 1.0}).encode())
        add_member(tar, "nojson.mp3", b"\x00" * 100)
        add_member(tar, "broken.mp3", mp3_bytes(np.zeros(2400, np.float32)))
        add_member(tar, "broken.json", b"{not json")
    with tarfile.open(folder / "EN-B000001.tar") as tar:  # cut inside the last mp3's data
        last = [m for m in tar if m.name.endswith(".mp3")][-1]
    data = (folder / "EN-B000001.tar").read_bytes()
    (folder / "EN-B000001.tar").write_bytes(data[:last.offset_data + last.size // 2])
    (folder / "EN-B000003.tar").write_bytes(b"not a tar at all" * 100)
    summary = index_shards([str(folder / "*.tar")], tmp_path / "idx")
    report = [json.loads(x) for x in (tmp_path / "idx" / "skipped.jsonl").read_text().splitlines()]
    reasons = {(os.path.basename(r["file"]), r["member"]): r["reason"] for r in report}
    assert summary.rows == 3 + 2 and summary.skipped == len(report) == 6, reasons
    assert "truncated" in reasons[("EN-B000001.tar", "EN_B00001_S00000_W000002.mp3")]
    assert "unexpected end of data" in reasons[("EN-B000001.tar", None)]
    assert "unreadable" in reasons[("EN-B000002.tar", "bad.mp3")]
    assert "unreadable" in reasons[("EN-B000002.tar", "nojson.mp3")]
    assert "bad JSON" in reasons[("EN-B000002.tar", "broken.json")]
    assert "not a readable tar" in reasons[("EN-B000003.tar", None)]


def test_rerun_reads_only_unfinished_shards_and_agrees(tmp_path, monkeypatch):
    emilia_shards(tmp_path)
    pattern = str(tmp_path / "Emilia" / "*" / "*.tar")
    index_shards([pattern], tmp_path / "idx", jobs=2)
    first = columns(CorpusIndex(tmp_path / "idx"))
    read = []
    real = shards.read_tar
    monkeypatch.setattr(shards, "read_tar", lambda p, *a: read.append(p) or real(p, *a))
    index_shards([pattern], tmp_path / "idx")
    assert read == []
    # An interrupted run: one shard's part missing, another shard changed since it was read.
    parts = sorted((tmp_path / "idx" / "parts").iterdir())
    for f in parts[1].rglob("*"):
        f.unlink() if f.is_file() else None
    parts[1].joinpath("index.json").unlink(missing_ok=True)
    os.utime(tmp_path / "Emilia" / "ZH" / "ZH-B000000.tar", ns=(0, 0))
    index_shards([pattern], tmp_path / "idx")
    assert sorted(os.path.basename(p) for p in read) == ["EN-B000001.tar", "ZH-B000000.tar"]
    assert columns(CorpusIndex(tmp_path / "idx")) == first


def test_gzip_batches_cannot_be_indexed_in_place(tmp_path):
    path, _ = emilia_gz_batch(tmp_path)
    with pytest.raises(SourceError, match="gzip-compressed.*l3se data shard"):
        index_shards([str(path)], tmp_path / "idx")
    renamed = tmp_path / "EN_B00000.tar"  # gzip under a .tar name: found by its magic bytes
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(SourceError, match="gzip-compressed"):
        index_shards([str(renamed)], tmp_path / "idx")


def test_shard_every_layout_and_reindex(tmp_path, corpus):
    emilia = emilia_shards(tmp_path, langs=("ZH",), shards=1)
    gz, old = emilia_gz_batch(tmp_path / "old")
    speech = load_source(corpus / "speech")  # a LibriSpeech tree
    sources = [str(corpus / "speech"), str(gz), str(tmp_path / "Emilia" / "ZH" / "*.tar"),
               str(corpus / "noise")]
    out = tmp_path / "out"
    summary = write_shards(sources, out, shard_size=4, shuffle=True, seed=3, progress=False)
    n = len(speech) + len(old) + len(emilia) + 3
    assert (summary.rows, summary.shards, summary.skipped) == (n, 4, 0)
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shards.00000{k}.tar" for k in range(4)]
    assert not (out / "staging").exists()  # the un-gzipped batch is gone when done
    index = CorpusIndex(out)
    by_id = {item.id: item for item in index}
    assert len(by_id) == n and index.strings("id") != sorted(by_id)  # shuffled
    for item in speech:  # FLAC sources: the same samples, text and speaker
        got = by_id[item.id]
        assert (got.text, got.speaker, got.duration) == (item.text, item.speaker,
                                                          pytest.approx(item.duration))
        assert np.array_equal(load_audio(got.path, byte_range=got.byte_range),
                              load_audio(item.path))
    for uid, (row, x) in {**old, **emilia}.items():  # MP3 sources: decoded once, at 24 kHz
        got = by_id[uid]
        assert (got.text, got.language, got.sample_rate) == (row["text"], row["language"],
                                                             EMILIA_SR)
        assert got.dnsmos == pytest.approx(row["dnsmos"])
        assert snr_db(load_audio(got.path, byte_range=got.byte_range),
                      resample(x, EMILIA_SR, 16000)) > 15
    assert by_id["noise_1"].duration == pytest.approx(5.0)
    # The shards re-index to the same rows.
    index_shards([str(out / "shards.*.tar")], tmp_path / "again", progress=False)
    assert columns(CorpusIndex(tmp_path / "again")) == columns(index)


def test_shard_rerun_writes_only_missing_shards(tmp_path, corpus):
    sources = [str(corpus / "speech")]
    out = tmp_path / "out"
    write_shards(sources, out, shard_size=2, shuffle=True, seed=1, progress=False)
    first = columns(CorpusIndex(out))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    (out / "shards.000001.tar").unlink()  # as if interrupted before this shard
    write_shards(sources, out, shard_size=2, shuffle=True, seed=1, progress=False)
    assert columns(CorpusIndex(out)) == first
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert [k for k in stamps if after[k] != stamps[k]] == ["shards.000001.tar"]
    # Another seed assigns other items to the shards: all are rewritten, none kept stale.
    write_shards(sources, out, shard_size=2, shuffle=True, seed=2, progress=False)
    reshuffled = CorpusIndex(out)
    assert sorted(reshuffled.strings("id")) == sorted(first["id"])
    assert reshuffled.strings("id") != first["id"]
    for item in reshuffled:
        assert len(load_audio(item.path, byte_range=item.byte_range)) == round(
            item.duration * 16000)
    # Fewer, larger shards: the earlier run's extra shards are removed, not left beside them.
    write_shards(sources, out, shard_size=4, progress=False)
    assert sorted(p.name for p in out.glob("*.tar")) == ["shards.000000.tar", "shards.000001.tar"]
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["shards.000000", "shards.000001"]


def test_shard_skips_bad_files_and_rirs_keep_their_channels(tmp_path, corpus):
    rirs = tmp_path / "RIRS_NOISES" / "real_rirs_isotropic_noises"
    rirs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    two = [synthetic_rir(rng), synthetic_rir(rng)]
    n = min(map(len, two))
    sf.write(rirs / "RVB2014_type1_rir_largeroom1_near_angla.wav",
             np.stack([r[:n] for r in two], 1), 16000, subtype="FLOAT")
    sf.write(rirs / "RVB2014_type1_noise_largeroom1_1.wav", np.full(800, 0.1), 16000)
    (rirs / "junk.wav").write_bytes(b"RIFF" + os.urandom(200))
    write_shards([str(tmp_path / "RIRS_NOISES")], tmp_path / "rir", rirs=True, progress=False)
    index = CorpusIndex(tmp_path / "rir")
    assert index.strings("id") == ["real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_"
                                   "near_angla"]
    report = (tmp_path / "rir" / "skipped.jsonl").read_text()
    assert "junk.wav" in report and "unreadable" in report
    member = read_rir_folder(tmp_path / "RIRS_NOISES")[0]
    with open(index[0].path, "rb") as f:
        f.seek(index[0].byte_offset)
        data, _ = sf.read(__import__("io").BytesIO(f.read(index[0].byte_size)))
    assert data.shape[1] == 2 and np.abs(data - sf.read(member.path)[0]).max() < 1e-4
    # A manifest row whose duration is given (so no header is read) names a bad file: the
    # shard leaves it out at decode time and reports it.
    (tmp_path / "bad.flac").write_bytes(os.urandom(500))
    rows = [json.loads(x) for x in (corpus / "speech.jsonl").read_text().splitlines()[:2]]
    rows.append({"id": "bad", "path": str(tmp_path / "bad.flac"), "duration": 1.0})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = write_shards([str(tmp_path / "m.jsonl")], tmp_path / "m", progress=False)
    assert (summary.rows, summary.skipped) == (2, 1)
    assert "bad.flac" in (tmp_path / "m" / "skipped.jsonl").read_text()
