import json
from pathlib import Path

import numpy as np
import pytest

from data_sim.audio import write_audio
from data_sim.sources import (
    SourceError,
    load_source,
    read_rir_folder,
    read_wav_scp,
    write_jsonl,
)


def test_librispeech_tree_with_transcripts(corpus):
    items = load_source(corpus / "speech")
    assert len(items) == 6
    first = items[0]
    assert first.id == "100-7-0000" and first.text == "HELLO WORLD NUMBER 0"
    assert first.speaker == "100" and first.duration == pytest.approx(3.0, abs=1e-3)


def test_jsonl_relative_paths_and_header_durations(corpus):
    write_jsonl(load_source(corpus / "speech"), corpus / "sub" / "m.jsonl")
    rows = [json.loads(line) for line in (corpus / "sub" / "m.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all("duration" in r for r in rows)
    del rows[0]["duration"]
    (corpus / "sub" / "m2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_source(corpus / "sub" / "m2.jsonl")
    assert items[0].duration == pytest.approx(3.0, abs=1e-3)  # read from the header


def test_wav_scp_with_text_and_utt2spk(tmp_path):
    for u in ("u1", "u2"):
        write_audio(tmp_path / f"{u}.wav", np.full(8000, 0.1, np.float32))
    (tmp_path / "wav.scp").write_text("u1 u1.wav\nu2 " + str(tmp_path / "u2.wav") + "\n")
    (tmp_path / "text").write_text("u1 HELLO THERE\n")
    (tmp_path / "utt2spk").write_text("u1 spkA\nu2 spkB\n")
    items = read_wav_scp(tmp_path / "wav.scp")
    assert [(i.id, i.text, i.speaker) for i in items] == [
        ("u1", "HELLO THERE", "spkA"), ("u2", None, "spkB")]
    assert items[1].duration == pytest.approx(0.5)
    (tmp_path / "p.scp").write_text("u1 sox a.wav -t wav - |\n")
    with pytest.raises(SourceError, match="piped"):
        read_wav_scp(tmp_path / "p.scp")


def test_rir_folder_excludes_openslr_noises(tmp_path):
    d = tmp_path / "RIRS_NOISES" / "real_rirs_isotropic_noises"
    write_audio(d / "RVB2014_type1_rir_largeroom1_near_angla.wav", np.eye(1, 800)[0])
    write_audio(d / "RVB2014_type1_noise_largeroom1_1.wav", np.full(800, 0.1, np.float32))
    write_audio(tmp_path / "RIRS_NOISES" / "simulated_rirs" / "smallroom" / "Room001" /
                "Room001-00001.wav", np.eye(1, 800)[0])
    items = read_rir_folder(tmp_path / "RIRS_NOISES")
    assert len(items) == 2 and all("noise" not in Path(i.path).name for i in items)


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        load_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(SourceError, match="expected a folder"):
        load_source(tmp_path / "x.txt")
