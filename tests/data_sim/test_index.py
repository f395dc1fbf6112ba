"""The columnar corpus index: rows read back as written, views, filters, atomic rewrites, and
the sources and datasets that take it in place of a list."""

import json
import pickle

import numpy as np
import pytest
import torch

from data_sim.dataset import DataConfig, MixtureDataset, build_dataset, select_speech
from data_sim.index import CorpusIndex, is_index, merge_indexes, write_columns, write_index
from data_sim.mixer import MixConfig
from data_sim.sources import AudioItem, SourceError, load_rirs, load_source, read_rir_folder


def rows(tmp_path):
    """Members of two shards and a plain file; unknown text/language/score on some rows."""
    shard_a, shard_b = str(tmp_path / "a.tar"), str(tmp_path / "sub" / "b.tar")
    return [
        AudioItem("u0", shard_a, 1.5, 24000, "héllo wörld", "s1", language="en", dnsmos=3.5,
                  byte_offset=512, byte_size=1000),
        AudioItem("u1", shard_a, 4.0, 24000, None, "s1", language="zh", dnsmos=2.5,
                  byte_offset=2048, byte_size=3000),
        AudioItem("u2", shard_b, 12.0, 16000, "你好", None, language="zh", byte_offset=512,
                  byte_size=10),
        AudioItem("u3", str(tmp_path / "x.wav"), 0.5, 16000, "plain", "s2"),
    ]


def test_rows_read_back_as_written(tmp_path):
    items = rows(tmp_path)
    write_index(items, tmp_path / "idx")
    index = CorpusIndex(tmp_path / "idx")
    assert is_index(tmp_path / "idx") and not is_index(tmp_path)
    assert len(index) == 4 and index.languages == ["en", "zh"]
    for got, want in zip(index, items):
        assert got.duration == pytest.approx(want.duration)
        assert got.dnsmos == (None if want.dnsmos is None else pytest.approx(want.dnsmos))
        got.duration = got.dnsmos = want.duration = want.dnsmos = None
        assert got == want
    assert index[-1].id == "u3" and index[1].byte_range == (2048, 3000)
    assert index.shard_ids.tolist() == [0, 0, 1, 2]
    with pytest.raises(IndexError):
        index[4]
    # Only the index folder is named in index.json's files when inside it: these lie outside.
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["files"][0] == str(tmp_path / "a.tar")


def test_columns_are_memory_mapped_and_pickle_as_maps(tmp_path):
    write_index(rows(tmp_path), tmp_path / "idx")
    index = CorpusIndex(tmp_path / "idx").select(np.array([3, 0]))
    assert isinstance(index._num["duration"], np.memmap)
    again = pickle.loads(pickle.dumps(index))
    assert isinstance(again._num["duration"], np.memmap)
    assert [i.id for i in again] == ["u3", "u0"]
    assert len(pickle.dumps(index)) < 1000  # a folder and row numbers, not the columns


def test_select_and_filter_compose(tmp_path):
    write_index(rows(tmp_path), tmp_path / "idx")
    index = CorpusIndex(tmp_path / "idx")
    assert [i.id for i in index.filter(languages=["zh"])] == ["u1", "u2"]
    assert [i.id for i in index.filter(min_seconds=1.0, max_seconds=5.0)] == ["u0", "u1"]
    assert [i.id for i in index.filter(min_dnsmos=3.0)] == ["u0"]  # unscored rows fail too
    view = index.select(np.array([2, 1, 0]))
    assert [i.id for i in view.filter(languages=["zh", "fr"])] == ["u2", "u1"]
    assert view.filter(languages=["zh"]).shard_ids.tolist() == [1, 0]
    assert [i.id for i in view[1:]] == ["u1", "u0"]
    assert len(index.filter(languages=["fr"])) == 0


def test_merge_remaps_shards_and_languages(tmp_path):
    items = rows(tmp_path)
    write_index(items[:2], tmp_path / "p0")  # languages en, zh
    write_index(items[2:], tmp_path / "p1")  # zh and unknown
    write_index([AudioItem("v", str(tmp_path / "c.tar"), 2.0, language="de", byte_offset=0,
                           byte_size=5)], tmp_path / "p2")
    merge_indexes([tmp_path / "p2", tmp_path / "p0", tmp_path / "p1"], tmp_path / "m")
    merged = CorpusIndex(tmp_path / "m")
    assert merged.languages == ["de", "en", "zh"]
    assert [(i.id, i.language) for i in merged] == [
        ("v", "de"), ("u0", "en"), ("u1", "zh"), ("u2", "zh"), ("u3", None)]
    assert merged.shard_ids.tolist() == [0, 1, 1, 2, 3]
    assert [i.path for i in merged][1:] == [i.path for i in items]
    assert merged[1].text == "héllo wörld" and merged[3].text == "你好"


def test_files_inside_the_index_are_relative_and_rewrites_are_atomic(tmp_path):
    out = tmp_path / "idx"
    write_index([AudioItem("a", str(out / "shards.000000.tar"), 1.0, byte_offset=0,
                           byte_size=1)], out)
    assert json.loads((out / "index.json").read_text())["files"] == ["shards.000000.tar"]
    moved = tmp_path / "moved"
    out.rename(moved)
    assert CorpusIndex(moved)[0].path == str(moved / "shards.000000.tar")
    before = (moved / "index.json").read_text()
    with pytest.raises(ValueError, match="shape"):  # a write that fails part-way
        write_columns(moved, {"duration": np.zeros(3)}, {"id": ["x"]}, [], [])
    assert (moved / "index.json").read_text() == before
    assert [p.name for p in moved.glob("columns.*")] == [json.loads(before)["columns"]]
    write_index(rows(tmp_path), moved)
    assert len(CorpusIndex(moved)) == 4 and len(list(moved.glob("columns.*"))) == 1


def test_sources_and_datasets_take_an_index(corpus, tmp_path):
    speech = load_source(corpus / "speech.jsonl")
    for item, lang, score in zip(speech, ["en", "zh"] * 3, [2.0, 3.0, 4.0] * 2):
        item.language, item.dnsmos = lang, score
    write_index(speech, tmp_path / "speech")
    write_index(load_source(corpus / "noise"), tmp_path / "noise")
    write_index(read_rir_folder(corpus / "rir"), tmp_path / "rir")
    assert isinstance(load_source(tmp_path / "speech"), CorpusIndex)
    assert isinstance(load_rirs(tmp_path / "rir", 0.5), CorpusIndex)
    cfg = DataConfig(speech=str(tmp_path / "speech"), noise=str(tmp_path / "noise"),
                     rir=str(tmp_path / "rir"), languages=["en"], min_dnsmos=3.0,
                     max_seconds=4.5, mix=MixConfig(segment_seconds=2.0))
    ds = build_dataset(cfg)
    assert isinstance(ds.speech, CorpusIndex) and isinstance(ds.mixer.noises, CorpusIndex)
    assert [i.id for i in ds.speech] == ["100-7-0002"]  # en, score >= 3, <= 4.5 s: not 0 (score 2), not 4 (5 s)
    as_list = MixtureDataset(select_speech(speech, cfg), load_source(corpus / "noise"),
                             read_rir_folder(corpus / "rir"), cfg.mix)
    assert [i.id for i in as_list.speech] == ["100-7-0002"]
    for i in range(3):  # the same mixtures from the index as from the list
        assert torch.equal(ds[i]["noisy"], as_list[i]["noisy"])
    with pytest.raises(ValueError, match="no utterance of at most 4.5 s.*min_dnsmos 4.5"):
        select_speech(load_source(tmp_path / "speech"),
                      DataConfig(max_seconds=4.5, min_dnsmos=4.5))


def test_a_foreign_index_json_is_a_clear_error(tmp_path):
    (tmp_path / "index.json").write_text('{"format": "l3se-index", "version": 99}')
    with pytest.raises(SourceError, match="version 99"):
        load_source(tmp_path)
