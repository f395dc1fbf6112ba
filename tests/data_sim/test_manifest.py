"""``l3se data manifest``: a folder of one's own recordings as a JSONL manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_sim.audio import write_audio
from data_sim.manifest import scan_recordings
from data_sim.sources import SourceError, read_jsonl
from l3se.cli import main
from tests.conftest import SR, speech_like


@pytest.fixture
def recordings(tmp_path):
    """my/clean: alice/a1 (.txt), alice/a2 (.lab), bob/day1/b1 (both: .txt wins), top.flac
    (no transcript), broken.wav (not audio), odd.wav with a transcript that is not UTF-8."""
    rng = np.random.default_rng(0)
    root = tmp_path / "my" / "clean"
    for rel, seconds in (("alice/a1.wav", 1.0), ("alice/a2.wav", 1.5), ("bob/day1/b1.flac", 2.0),
                         ("top.flac", 0.5), ("odd.wav", 0.5)):
        write_audio(root / rel, speech_like(rng, seconds))
    (root / "alice" / "a1.txt").write_text("Hello\n  there,  world.\n")
    (root / "alice" / "a2.lab").write_text("second one")
    (root / "bob" / "day1" / "b1.txt").write_text("from the txt")
    (root / "bob" / "day1" / "b1.lab").write_text("from the lab")
    (root / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (root / "odd.txt").write_bytes(b"\xff\xfe\xfa bad")
    return root


def test_manifest_lists_recordings_with_transcripts_and_speakers(recordings, capsys, caplog):
    out = recordings.parent / "clean.jsonl"
    assert main(["data", "manifest", str(recordings), str(out), "--speaker-from-folder"]) == 0
    printed = capsys.readouterr().out
    assert "5 recordings (0.1 min, 3 with transcripts, 2 speakers); 2 skipped" in printed
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2
    assert "broken.wav" in warned[0] and "odd.txt: transcript not used" in warned[1]
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == ["alice/a1", "alice/a2", "bob/day1/b1", "odd", "top"]
    # Relative to the manifest's folder, which holds the recordings.
    assert rows["alice/a1"]["path"] == "clean/alice/a1.wav"
    assert rows["alice/a1"]["text"] == "Hello there, world."
    assert rows["alice/a2"]["text"] == "second one"
    assert rows["bob/day1/b1"]["text"] == "from the txt"
    assert "text" not in rows["top"] and "text" not in rows["odd"]
    assert rows["bob/day1/b1"]["speaker"] == "bob" and "speaker" not in rows["top"]
    assert rows["alice/a2"]["duration"] == pytest.approx(1.5)
    assert rows["alice/a2"]["sample_rate"] == SR
    # Training reads it back.
    items = {item.id: item for item in read_jsonl(out)}
    assert items["alice/a1"].text == "Hello there, world." and items["top"].duration == 0.5
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".part")] == []


def test_without_the_flag_no_speakers_and_paths_outside_stay_absolute(recordings, tmp_path):
    out = tmp_path / "elsewhere" / "m.jsonl"
    assert main(["data", "manifest", str(recordings), str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all("speaker" not in r for r in rows)
    assert all(r["path"].startswith(str(recordings.resolve())) for r in rows)


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    rc = main(["data", "manifest", str(tmp_path / "nope"), str(tmp_path / "m.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "folder not found" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    rc = main(["data", "manifest", str(tmp_path / "empty"), str(tmp_path / "m.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no audio files (.wav, .flac" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.jsonl").exists()


def test_a_folder_of_unreadable_files_says_so(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"nothing")
    with pytest.raises(SourceError, match="none of its 1 audio files can be read"):
        scan_recordings(tmp_path)
