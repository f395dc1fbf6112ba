import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_sim.audio import write_audio
from l3se import decoding
from l3se.card import ModelCard, write_card
from l3se.cli import main
from l3se.decoding import DecodeConfig
from l3se.enhance_corpus import (
    InputError,
    enhance_corpus,
    exit_status,
    merge_parts,
    part_path,
    plan_jobs,
    shard,
)
from l3se.enhancer import EnhancerConfig
from tests.conftest import speech_like
from tests.enhance.tiny_model import make_tiny_model_dir

SR = 16000


class Halver:
    """A stand-in enhancer: output = input / 2; records what it was given; optionally fails on
    inputs of some lengths or stops the run after a number of batches."""

    sample_rate = SR

    def __init__(self, chunks_per_batch=2, fail_lengths=(), stop_after=None):
        self.cfg = EnhancerConfig(chunks_per_batch=chunks_per_batch)
        self.seen: list[int] = []
        self.settings: list[dict] = []
        self.batch_sizes: list[int] = []
        self.fail_lengths = set(fail_lengths)
        self.stop_after = stop_after
        self.batches = 0

    def check_mode(self, mode):
        pass

    def enhance_batch(self, items, **settings):
        if self.stop_after is not None and self.batches == self.stop_after:
            raise KeyboardInterrupt
        self.batches += 1
        if any(len(w) in self.fail_lengths for w, _ in items):
            raise RuntimeError("model exploded")
        self.seen += [len(w) for w, _ in items]
        self.batch_sizes.append(len(items))
        self.settings.append(settings)
        return [w / 2 for w, _ in items]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tree(tmp_path):
    """noisy/a.wav, noisy/sub/b.flac, noisy/sub/deep/c.wav (44.1 kHz stereo)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "noisy"
    write_audio(root / "a.wav", speech_like(rng, 1.0))
    write_audio(root / "sub" / "b.flac", speech_like(rng, 1.3))
    (root / "sub" / "deep").mkdir(parents=True)
    stereo = np.stack([speech_like(rng, 1.1, 44100), speech_like(rng, 1.1, 44100)], 1)
    sf.write(root / "sub" / "deep" / "c.wav", stereo, 44100)
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny")


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


def test_cli_mirrors_the_tree_with_the_tiny_model(tree, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["enhance", str(tree), str(out), "--model", str(model_dir), "--no-progress"])
    assert rc == 0
    assert "enhanced 3 file(s)" in capsys.readouterr().out
    expected = {"a.wav": 16000, "sub/b.wav": 20800, "sub/deep/c.wav": 17600}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == sorted(expected)
    for rel, n in expected.items():
        wav, sr = sf.read(out / rel)
        assert sr == SR and wav.ndim == 1 and len(wav) == n and np.abs(wav).max() > 0
    report = json.loads((out / "enhance_report.json").read_text())
    assert report["summary"]["ok"] == 3 and report["summary"]["rtf"] > 0
    assert all(f["status"] == "ok" and f["seconds"] > 0 for f in report["files"])
    # A second run finds everything done and does not even need the model.
    rc = main(["enhance", str(tree), str(out), "--model", str(tmp_path / "gone"), "--no-progress"])
    assert rc == 0 and "3 already done" in capsys.readouterr().out


def test_single_file_to_file_or_folder(tree, model_dir, tmp_path):
    one = tmp_path / "one.wav"
    assert main(["enhance", str(tree / "a.wav"), str(one), "--model", str(model_dir),
                 "--no-progress", "--strategy", "sample", "--seed", "1"]) == 0
    assert sf.info(one).frames == 16000 and not (tmp_path / "enhance_report.json").exists()
    folder = tmp_path / "folder"
    report = enhance_corpus(tree / "sub" / "b.flac", folder, Halver(), progress=False)
    assert (folder / "b.wav").is_file() and report["summary"]["ok"] == 1


def test_bad_files_are_reported_and_the_rest_written(tree, model_dir, tmp_path, capsys):
    bad = tree / "bad"
    bad.mkdir()
    (bad / "garbage.wav").write_bytes(b"RIFF not really a wave file")
    (bad / "empty.flac").write_bytes(b"")
    write_audio(bad / "silent.wav", np.zeros(SR, np.float32))
    write_audio(bad / "short.wav", speech_like(np.random.default_rng(1), 0.03))
    out = tmp_path / "out"
    report_path = tmp_path / "r" / "report.json"
    rc = main(["enhance", str(tree), str(out), "--model", str(model_dir), "--no-progress",
               "--report", str(report_path), "--batch-size", "2"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "4 skipped" in printed and "garbage.wav" in printed
    report = json.loads(report_path.read_text())
    status = {f["id"]: (f["status"], f["reason"]) for f in report["files"]}
    assert status["bad/garbage"][0] == "skipped" and "unreadable" in status["bad/garbage"][1]
    assert status["bad/empty"] == ("skipped", "empty file")
    assert status["bad/silent"] == ("skipped", "all-silent audio")
    assert status["bad/short"][0] == "skipped" and "too short" in status["bad/short"][1]
    assert {k for k, v in status.items() if v[0] == "ok"} == {"a", "sub/b", "sub/deep/c"}
    assert report["summary"] == {**report["summary"], "files": 7, "ok": 3, "skipped": 4}
    assert not (out / "bad").exists() and not leftovers(out)


def test_failures_do_not_stop_the_run(tree, tmp_path):
    fake = Halver(chunks_per_batch=3, fail_lengths={20800})
    report = enhance_corpus(tree, tmp_path / "out", fake, progress=False)
    status = {f["id"]: f["status"] for f in report["files"]}
    assert status == {"a": "ok", "sub/b": "failed", "sub/deep/c": "ok"}
    assert "model exploded" in report["files"][1]["reason"]
    assert sorted(fake.seen) == [16000, 17600] and exit_status(report) == 1
    assert not (tmp_path / "out" / "sub" / "b.wav").exists()


def test_resume_after_interruption(tree, tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = out / "sub" / ".b.wav.abc123.part"  # what a killed write leaves
    stale.write_bytes(b"half")
    with pytest.raises(KeyboardInterrupt):
        enhance_corpus(tree, out, Halver(stop_after=1), progress=False, files_per_batch=1)
    done = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert done == ["sub/b.wav"]  # longest first, then stopped
    assert not leftovers(out)
    fake = Halver(chunks_per_batch=1)
    report = enhance_corpus(tree, out, fake, progress=False)
    assert sorted(fake.seen) == [16000, 17600]  # the finished file is not redone
    assert [f["reason"] for f in report["files"]] == [None, "exists", None]
    assert exit_status(report) == 0 and len(list(out.rglob("*.wav"))) == 3
    again = Halver()
    enhance_corpus(tree, out, again, progress=False, overwrite=True)
    assert len(again.seen) == 3


def test_interrupted_write_leaves_nothing(tree, tmp_path, monkeypatch):
    out = tmp_path / "out"

    def dying_write(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("data_sim.audio.sf.write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        enhance_corpus(tree, out, Halver(), progress=False)
    assert not list(out.rglob("*.wav")) and not leftovers(out)


def test_manifests(tree, tmp_path):
    rows = [{"id": "spk1/utt1", "path": "noisy/a.wav"},
            {"path": str(tree / "sub" / "b.flac")}, {"id": "gone", "path": "missing.wav"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    report = enhance_corpus(manifest, out, Halver(), progress=False)
    assert (out / "spk1" / "utt1.wav").is_file()
    assert sf.read(out / "spk1" / "utt1.wav")[0].shape == (16000,)
    assert (out / "noisy" / "sub" / "b.wav").is_file()  # no id: the path under the manifest
    status = {f["id"]: (f["status"], f["reason"]) for f in report["files"]}
    assert status["gone"] == ("skipped", "file not found") and exit_status(report) == 1
    scp = tmp_path / "wav.scp"
    scp.write_text(f"u1 {tree / 'a.wav'}\nu2 noisy/sub/b.flac\n")
    enhance_corpus(scp, tmp_path / "scp_out", Halver(), progress=False)
    assert sorted(p.name for p in (tmp_path / "scp_out").glob("*.wav")) == ["u1.wav", "u2.wav"]


def test_manifest_ids_must_name_files_under_out(tmp_path):
    manifest = tmp_path / "m.jsonl"
    for rows, message in [
        ([{"id": "x", "path": "a.wav"}, {"id": "x", "path": "b.wav"}], "twice"),
        ([{"id": "../x", "path": "a.wav"}], "cannot name"),
        ([{"id": "x"}], "needs a 'path'"),
    ]:
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(InputError, match=message):
            plan_jobs(manifest, tmp_path / "out")


def test_same_stem_different_suffix_do_not_collide(tmp_path):
    rng = np.random.default_rng(0)
    write_audio(tmp_path / "in" / "x.wav", speech_like(rng, 0.5))
    write_audio(tmp_path / "in" / "x.flac", speech_like(rng, 0.5))
    outs = sorted(Path(j.output).name for j in plan_jobs(tmp_path / "in", tmp_path / "out"))
    assert outs == ["x.flac.wav", "x.wav"]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_file_once(world):
    jobs = list(range(11))
    shares = [shard(jobs, r, world) for r in range(world)]
    assert sorted(j for s in shares for j in s) == jobs
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_ranks_split_the_work_and_merge_reports(tree, tmp_path, monkeypatch):
    out = tmp_path / "out"
    fakes = []
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        fakes.append(Halver())
        enhance_corpus(tree, out, fakes[-1], progress=False)
        merged = out / "enhance_report.json"
        # The report is merged by whichever rank finishes last.
        assert merged.exists() == (rank == 0)
    assert sorted(len(f.seen) for f in fakes) == [1, 2]
    assert len(list(out.rglob("*.wav"))) == 3
    report = json.loads(merged.read_text())
    assert [f["id"] for f in report["files"]] == ["a", "sub/b", "sub/deep/c"]
    assert report["summary"]["ok"] == 3
    assert merge_parts(out / "enhance_report.json", 3) is None
    assert part_path(out / "enhance_report.json", 1, 2).is_file()


def test_user_mistakes_are_one_line_errors(tree, model_dir, tmp_path, capsys):
    m = ["--model", str(model_dir)]
    cases = [
        ([str(tmp_path / "nope"), str(tmp_path / "o")], "input not found"),
        ([str(tree), str(tree / "sub" / "out")], "inside the input folder"),
        ([str(tree), str(tmp_path / "o"), "--batch-size", "0"], "--batch-size"),
        ([str(tree), str(tmp_path / "o"), "--top-p", "1.5"], "--top-p: top_p must be in (0, 1]"),
        ([str(tree), str(tmp_path / "o"), "--temperature", "0"],
         "--temperature: temperature must be above 0"),
        ([str(tree / "notes.txt"), str(tmp_path / "o")], "expected an audio file"),
        ([str(tree / "a.wav"), str(tmp_path / "o.mp3")], "give a .wav file or a folder"),
        ([str(tree / "a.wav"), str(tree / "a.wav")], "overwrite the input"),
        ([str(tree), str(tmp_path / "o"), "--device", "tpu9"], "unknown device"),
        ([str(tree), str(tmp_path / "o"), "--mode", "direct", "--top-k", "5"],
         "--top-k: --mode direct decodes no tokens"),
    ]
    for args, message in cases:
        rc = main(["enhance", *args, *m, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2, args
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    rc = main(["enhance", str(tree), str(tmp_path / "o"), "--model", str(tmp_path / "none")])
    assert rc == 2 and "model directory not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_direct_mode_from_the_command_line(tree, model_dir, tmp_path):
    outs = {}
    for mode in ("lm", "direct"):
        outs[mode] = tmp_path / f"{mode}.wav"
        assert main(["enhance", str(tree / "a.wav"), str(outs[mode]), "--model", str(model_dir),
                     "--mode", mode, "--no-progress"]) == 0
    direct, sr = sf.read(outs["direct"], dtype="float32")
    assert sr == SR and direct.shape == (16000,) and np.abs(direct).max() > 0
    assert np.abs(direct - sf.read(outs["lm"], dtype="float32")[0]).max() > 1e-3


def test_the_model_card_is_announced_once_on_one_short_line(tree, model_dir, tmp_path, capsys,
                                                             caplog):
    def announced(*argv: str) -> list[str]:
        capsys.readouterr()
        assert main(["enhance", *argv, "--no-progress"]) == 0
        out, err = capsys.readouterr()
        assert out.startswith("enhanced ")  # the run's summary is never silenced
        return [line for line in err.splitlines() if line.startswith(("model ", "tiny-x"))]

    assert announced(str(tree / "a.wav"), str(tmp_path / "a.wav"), "--model", str(model_dir)) == [
        f"model {model_dir}: no model card, so its training data and quality are unknown"]
    carded = shutil.copytree(model_dir, tmp_path / "carded")
    write_card(ModelCard("tiny-x", "noise only " * 30, warning="random weights. More."), carded)
    lines = announced(str(tree), str(tmp_path / "tree"), "--model", str(carded))
    assert len(lines) == 1 and len(lines[0]) <= 160, lines  # once per run, however many files
    assert lines[0].startswith("tiny-x: trained on noise only")
    assert lines[0].endswith(f". Warning: random weights; see `l3se card {carded}`")
    assert announced(str(tree / "a.wav"), str(tmp_path / "q.wav"), "--model", str(carded),
                     "--quiet") == []

    # The library logs the same line, when it loads a model.
    caplog.set_level(logging.INFO, logger="l3se.enhance_corpus")
    enhance_corpus(tree / "a.wav", tmp_path / "b.wav", carded, progress=False, mode="direct")
    assert [r.getMessage() for r in caplog.records] == [
        lines[0], "mode direct: codec decoder on the quantized NI-Encoder output, no LM"]
    # Nothing left to do: no model is loaded, and none is announced.
    caplog.clear()
    enhance_corpus(tree / "a.wav", tmp_path / "b.wav", carded, progress=False)
    assert not caplog.records


def test_batch_sizes_and_settings_reach_the_model(tree, tmp_path):
    fake = Halver(chunks_per_batch=2)
    enhance_corpus(tree, tmp_path / "a", fake, progress=False)
    assert fake.batch_sizes == [2, 1]  # files per batch: the model's chunks per batch
    assert fake.settings[0] == {"decode": DecodeConfig(), "mode": "lm", "chunks_per_batch": 2}
    fake = Halver(chunks_per_batch=2)
    enhance_corpus(tree, tmp_path / "b", fake, progress=False, files_per_batch=3,
                   chunks_per_batch=5, decode={"top_k": 4}, mode="direct")
    assert fake.settings == [{"decode": DecodeConfig(top_k=4), "mode": "direct",
                              "chunks_per_batch": 5}]
    assert fake.cfg == EnhancerConfig(chunks_per_batch=2)
    with pytest.raises(InputError, match="top_p must be in"):
        enhance_corpus(tree, tmp_path / "c", fake, progress=False, decode={"top_p": 0.0})
    with pytest.raises(InputError, match="files_per_batch must be at least 1"):
        enhance_corpus(tree, tmp_path / "c", fake, progress=False, files_per_batch=0)


def test_decoding_options_reach_generate(tree, model_dir, tmp_path, monkeypatch):
    """`l3se enhance --strategy ... --seed` must decode with exactly those settings, and they
    must change the output."""
    used = []
    generate = decoding.generate
    monkeypatch.setattr(decoding, "generate",
                        lambda lm, prefix, lengths, cfg, *args, **kwargs:
                        used.append(cfg) or generate(lm, prefix, lengths, cfg, *args, **kwargs))
    outs = {}
    for name, flags in {"greedy": [], "sampled": ["--strategy", "sample", "--temperature", "1.5",
                                                  "--top-k", "20", "--top-p", "0.9",
                                                  "--seed", "3"],
                        "mbr": ["--strategy", "mbr", "--temperature", "2"]}.items():
        outs[name] = tmp_path / f"{name}.wav"
        assert main(["enhance", str(tree / "a.wav"), str(outs[name]), "--model", str(model_dir),
                     "--no-progress", *flags]) == 0
    assert used == [DecodeConfig(), DecodeConfig("sample", 1.5, 20, 0.9, 3),
                    DecodeConfig("mbr", 2.0)]
    greedy, sampled, mbr = (sf.read(outs[n], dtype="float32")[0]
                            for n in ("greedy", "sampled", "mbr"))
    assert np.abs(greedy - sampled).max() > 1e-3 and np.abs(greedy - mbr).max() > 1e-3
