import json
import re
import subprocess
import sys

from data_sim.sources import load_source, write_jsonl
from l3se.cli import main


def listed_subcommands(*args: str) -> list[str]:
    """The subcommand names an ``l3se ... --help`` lists, in order."""
    out = subprocess.run([sys.executable, "-m", "l3se", *args, "--help"], capture_output=True,
                         text=True, check=True).stdout
    section = out.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    # Subcommands are indented four spaces, their help text beside them or, for a long name, on
    # the next line; wrapped help lines are indented deeper.
    return re.findall(r"^ {4}(\S+)", section, re.M)


def test_help_lists_subcommands():
    assert listed_subcommands() == ["data", "recipe", "train", "enhance", "card", "evaluate",
                                    "diagnose"]
    assert listed_subcommands("train") == ["codec-1", "codec-2", "s2t", "ttr", "codec-3", "distill",
                                           "lm"]
    assert listed_subcommands("data") == ["starter", "evalset", "word-times", "manifest",
                                          "summary", "index", "shard"]
    assert listed_subcommands("recipe") == ["quickstart", "finetune", "codec3-ablation",
                                            "codec-sweep", "codec-eval"]


def test_summary_on_a_corpus(corpus, capsys):
    write_jsonl(load_source(corpus / "speech"), corpus / "speech.jsonl")
    rc = main(["data", "summary", "-n", "12", "--workers", "0", "--json",
               f"speech={corpus / 'speech.jsonl'}", f"noise={corpus / 'noise'}",
               f"rir={corpus / 'rir'}", "mix.segment_seconds=2.0", "epoch_size=12"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["mixtures"] == 12 and s["speech_files"] == 6 and s["rir_files"] == 3
    assert -5 <= s["snr_db"]["min"] <= s["snr_db"]["max"] <= 20
    assert s["max_peak"] <= 0.99 + 1e-6 and s["skipped_files"] == []


def test_user_mistakes_are_one_line_errors(corpus, capsys):
    rc = main(["data", "summary", f"speech={corpus / 'nope.jsonl'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "data source not found" in err and "Traceback" not in err
    rc = main(["data", "summary", "mix.snr_rnge=[0, 5]"])
    err = capsys.readouterr().err
    assert rc == 2 and "mix.snr_rnge" in err and "mix.snr_range" in err
    rc = main(["data", "evalset", str(corpus / "ev"), "--config", "huge"])
    assert rc == 2 and "available: paper, tiny" in capsys.readouterr().err


def test_evalset_cli(corpus, capsys):
    out = corpus / "ev"
    rc = main(["data", "evalset", str(out), f"speech={corpus / 'speech'}",
               f"noise={corpus / 'noise'}", f"rir={corpus / 'rir'}", "n_utterances=3",
               "min_seconds=3", "max_seconds=6"])
    assert rc == 0 and "wrote 6 mixtures" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "evalset.jsonl").read_text().splitlines()]
    assert all((out / r["noisy"]).is_file() and (out / r["clean"]).is_file() for r in rows)


def test_word_times_cli(corpus, capsys):
    out = corpus / "words.jsonl"
    assert main(["data", "word-times", str(corpus / "speech.jsonl"), str(out)]) == 0
    assert f"wrote 6 utterances with word timings to {out}" in capsys.readouterr().out
    for item in load_source(out):
        assert [w for w, _, _ in item.words] == item.text.split()
        assert all(0 <= s < e <= item.duration + 0.01 for _, s, e in item.words)
    assert main(["data", "word-times", str(corpus / "nope.jsonl"), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("l3se: error:") and "nope.jsonl" in err and "\n" not in err


def test_index_and_shard_cli(tmp_path, corpus, capsys):
    from data_sim.index import CorpusIndex
    from tests.data_sim.corpora import emilia_gz_batch, emilia_shards

    emilia_shards(tmp_path, langs=("EN",))
    rc = main(["data", "index", str(tmp_path / "Emilia" / "EN" / "*.tar"), str(tmp_path / "idx"),
               "-j", "2"])
    assert rc == 0
    assert f"indexed 6 utterances (0.00 h) in 2 shards into {tmp_path / 'idx'}" in \
        capsys.readouterr().out
    gz, _ = emilia_gz_batch(tmp_path / "old")
    out = tmp_path / "shards"
    rc = main(["data", "shard", str(corpus / "speech"), str(gz), str(out), "--shard-size", "4",
               "--shuffle", "--seed", "5"])
    assert rc == 0 and "wrote 9 utterances" in capsys.readouterr().out
    assert main(["data", "index", str(out / "shards.*.tar"), str(tmp_path / "again")]) == 0
    rows = CorpusIndex(tmp_path / "again")
    assert [(i.id, i.text) for i in rows] == [(i.id, i.text) for i in CorpusIndex(out)]
    # Training reads the index like any other source.
    capsys.readouterr()
    assert main(["data", "summary", "-n", "4", "--workers", "0", "--json",
                 f"speech={tmp_path / 'idx'}", f"noise={corpus / 'noise'}", "rir=null",
                 "mix.p_reverb=0", "languages=[en]"]) == 0
    assert json.loads(capsys.readouterr().out)["speech_files"] == 6


def test_index_of_a_gzip_batch_is_a_one_line_error(tmp_path, capsys):
    from tests.data_sim.corpora import emilia_gz_batch

    gz, _ = emilia_gz_batch(tmp_path)
    assert main(["data", "index", str(gz), str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("l3se: error:") and "\n" not in err
    assert "gzip-compressed" in err and f"l3se data shard {gz} OUT" in err
    assert main(["data", "shard", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "data source not found" in err and "\n" not in err
