import csv
import json
import logging
import os
import shutil

import numpy as np
import pytest

from data_sim.audio import load_audio, write_audio
from l3se.evaluation import InputError, evaluate, runner
from l3se.evaluation.inputs import load_manifest
from l3se.evaluation.registry import parse_selection
from l3se.evaluation.runner import align


@pytest.fixture()
def enhanced(tmp_path, evalset):
    """A system that returns the clean signal, laid out as <subset>/<id>.flac, 100 samples short,
    missing one item and with one stray file."""
    out = tmp_path / "enh"
    rows = [json.loads(line) for line in evalset.read_text().splitlines()]
    for r in rows[:-1]:
        wav = load_audio(evalset.parent / r["clean"])
        write_audio(out / r["subset"] / f"{r['id']}.flac", wav[:-100])
    write_audio(out / "stray.wav", np.zeros(1600, dtype=np.float32))
    return out


def test_full_offline_run_writes_reports(tmp_path, evalset, enhanced):
    report = tmp_path / "report"
    res = evaluate(evalset, {"clean": None, "enh": str(enhanced)}, metrics="offline", out_dir=report,
                   progress=False, workers=1)
    assert res.metrics == ["dnsmos", "pesq", "stoi", "estoi", "sisdr", "wer", "dwer", "wer_cv",
                           "per_cv", "sim"]
    by = {(r["system"], r["id"]): r for r in res.rows}
    assert len(res.rows) == 3 + 2
    clean = by[("clean", "utt0")]
    assert clean["pesq"] > 4.4 and clean["stoi"] > 0.999 and clean["dwer"] == 0 and clean["wer"] == 0
    assert clean["wer_cv"] == 0 and clean["per_cv"] == 0 and clean["per_cv_words"] > clean["wer_cv_words"]
    assert clean["sim"] > 0.99
    enh = by[("enh", "utt0")]
    assert enh["length_diff_s"] == pytest.approx(-100 / 16000)
    assert enh["pesq"] > 4.0
    assert 1.0 < clean["dnsmos_ovrl"] < 5.0

    assert res.matching["enh"].missing == ["low/utt2"]
    assert res.matching["enh"].unmatched == [str(enhanced / "stray.wav")]
    for name in ("per_file.csv", "per_file.json", "summary.json", "summary.md", "comparison.csv",
                 "snr_bins.csv", "wer_vs_snr.png", "wer_cv_vs_snr.png", "dnsmos_vs_snr.png"):
        assert (report / name).is_file(), name
    with open(report / "comparison.csv") as f:
        table = list(csv.reader(f))
    assert [r[0] for r in table[1:]] == ["clean", "enh"]
    assert "general DNSMOS" in table[0] and "low WER" in table[0]
    md = (report / "summary.md").read_text()
    assert "| system |" in md and "±" in md and "without an output" in md
    assert not list(report.glob("*.part"))


def test_resume_computes_only_what_is_missing(tmp_path, evalset, monkeypatch):
    report = tmp_path / "report"
    first = evaluate(evalset, {"noisy": None}, metrics="sisdr,pesq", out_dir=report, progress=False,
                     workers=1)
    noisy = {r["id"]: r for r in first.rows}
    assert noisy["utt2"]["sisdr"] == pytest.approx(-3.0, abs=0.5)  # scale-invariant: 0.5 gain ignored
    assert noisy["utt2"]["pesq"] < noisy["utt0"]["pesq"] < 4.0
    cache = report / ".cache" / "scores.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    # An interrupt during the last file: its records are lost and a line is torn.
    keep = [ln for ln in lines if '"utt2"' not in ln and "low/utt2" not in ln]
    cache.write_text("".join(keep) + lines[-1][:20])

    calls = []
    real = runner._score_task

    def spy(item, jobs, metrics):
        calls.append((item.uid, [job.metrics for job in jobs]))
        return real(item, jobs, metrics)

    monkeypatch.setattr(runner, "_score_task", spy)
    second = evaluate(evalset, {"noisy": None}, metrics="sisdr,pesq", out_dir=report, progress=False,
                      workers=1)
    assert calls == [("low/utt2", [["sisdr", "pesq"]])]
    assert [r["pesq"] for r in second.rows] == pytest.approx([r["pesq"] for r in first.rows])

    calls.clear()  # a new metric: only it runs, on every file
    evaluate(evalset, {"noisy": None}, metrics="sisdr,pesq,stoi", out_dir=report, progress=False,
             workers=1)
    assert sorted(calls) == [(u, [["stoi"]]) for u in ("general/utt0", "general/utt1", "low/utt2")]


def test_parallel_workers_match_in_process(tmp_path, evalset):
    one = evaluate(evalset, {"noisy": None}, metrics="sisdr,stoi", progress=False, workers=1)
    two = evaluate(evalset, {"noisy": None}, metrics="sisdr,stoi", workers=2, progress=False)
    assert one.columns == two.columns == ["sisdr", "stoi"]
    assert (one.workers, two.workers) == (1, 2)
    # Every metric's CPU time and audio come back from the workers too.
    audio = sum(len(load_audio(evalset.parent / json.loads(line)["noisy"])) / 16000
                for line in evalset.read_text().splitlines())
    for res in (one, two):
        assert list(res.costs) == ["sisdr", "stoi"]
        assert [a for _, a in res.costs.values()] == pytest.approx([audio, audio])
        assert res.costs["stoi"][0] > 0 and res.wall_s > 0
    assert [(r["system"], r["id"]) for r in two.rows] == [(r["system"], r["id"]) for r in one.rows]
    for column in one.columns:
        values = [r[column] for r in one.rows]
        assert all(np.isfinite(values)), column
        assert [r[column] for r in two.rows] == pytest.approx(values), column


def test_workers_default_to_one_per_core_and_at_most_one_per_item(evalset, monkeypatch):
    items = load_manifest(evalset)
    for cores, workers in ((1, 1), (2, 2), (16, 3)):
        monkeypatch.setattr(runner, "available_cores", lambda n=cores: n)
        assert runner.Plan(items, {}, [], {}).workers == workers
        assert runner.Plan(items, {}, [], {}, workers=5).workers == 5


def test_worker_processes_start_with_one_blas_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with runner._worker_threads(1):
        assert [os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                            "MKL_NUM_THREADS")] == ["1", "1", "1"]
    assert os.environ["OMP_NUM_THREADS"] == "4" and "OPENBLAS_NUM_THREADS" not in os.environ


def test_default_metrics_leave_out_open_vocabulary_pocketsphinx():
    default, offline = parse_selection("default"), parse_selection("offline")
    assert "wer" not in default and "dwer" not in default and "wer_cv" in default
    assert offline == default[:5] + ["wer", "dwer"] + default[5:]
    assert parse_selection("default,wer,dwer") == default + ["wer", "dwer"]


def test_folder_reference_and_no_reference(tmp_path, evalset, caplog):
    refs = tmp_path / "refs"
    shutil.copytree(evalset.parent / "general" / "clean", refs)
    (refs / "utt0.txt").write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG")
    res = evaluate(refs, {"same": str(refs)}, metrics="sisdr,wer", progress=False, workers=1)
    same = [r for r in res.rows if r["system"] == "same"]
    assert [r["sisdr"] > 60 for r in same] == [True, True]
    assert same[0]["wer"] == 0 and same[1].get("wer") is None  # utt1 has no transcript
    floor = [r for r in res.rows if r["system"] == "floor"]
    assert [(r["id"], r["wer"]) for r in floor] == [("utt0", 0)]  # only files with a transcript

    with caplog.at_level(logging.WARNING, logger="l3se.evaluation"):
        res = evaluate(None, {"same": str(refs)}, metrics="dnsmos,pesq", progress=False, workers=1)
    assert res.metrics == ["dnsmos"] and res.skipped == ["skipped: pesq (no reference audio)"]
    assert [r.getMessage() for r in caplog.records if r.name == runner.__name__] == res.skipped


def test_unreadable_output_is_reported_not_fatal(tmp_path, evalset):
    out = tmp_path / "bad" / "general"
    out.mkdir(parents=True)
    (out / "utt0.wav").write_bytes(b"not audio")
    res = evaluate(evalset, {"bad": str(tmp_path / "bad")}, metrics="sisdr", progress=False,
                   workers=1)
    assert "unreadable" in res.rows[0]["error"]


def test_input_mistakes(tmp_path, evalset):
    with pytest.raises(InputError, match="unknown metric 'nope'"):
        evaluate(evalset, {"noisy": None}, metrics="nope")
    with pytest.raises(InputError, match="folder not found"):
        evaluate(evalset, {"x": str(tmp_path / "missing")})
    with pytest.raises(InputError, match="reference not found"):
        evaluate(tmp_path / "nothing.jsonl", {"noisy": None})
    (tmp_path / "broken.jsonl").write_text('{"id": "a"}\n{oops\n')
    with pytest.raises(InputError, match="broken.jsonl:2"):
        evaluate(tmp_path / "broken.jsonl", {"noisy": None})


def test_align_cuts_or_pads():
    x = np.arange(5, dtype=np.float32)
    assert align(x, 3).tolist() == [0, 1, 2]
    assert align(x, 7).tolist() == [0, 1, 2, 3, 4, 0, 0]
