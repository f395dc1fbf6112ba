"""``l3se recipe codec-eval`` end to end on two tiny random codecs and a 3-utterance eval set:
one row per codec and the floor, finite numbers, a rerun that reuses everything, and one-line
errors for missing folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from data_sim.audio import write_audio
from l3se.cli import main
from l3se.models.codec import WavCodec
from tests.conftest import speech_like
from tests.models.tiny import tiny_codec_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def material(tmp_path):
    """(codec folders a and b, the eval set folder, the token LM's training manifest)."""
    rng = np.random.default_rng(0)
    codecs = {}
    for seed, name in enumerate("ab"):
        torch.manual_seed(seed)
        WavCodec(tiny_codec_config()).save_pretrained(tmp_path / name)
        codecs[name] = tmp_path / name
    evalset = tmp_path / "evalset"
    rows = []
    # Two subsets of the same utterances, as `l3se data evalset` writes them.
    for subset in ("general", "low"):
        for i in range(3):
            uid = f"utt{i}"
            for kind in ("clean", "noisy"):
                write_audio(evalset / subset / kind / f"{uid}.wav", speech_like(rng, 1.0 + 0.2 * i))
            rows.append({"id": uid, "subset": subset, "clean": f"{subset}/clean/{uid}.wav",
                         "noisy": f"{subset}/noisy/{uid}.wav", "text": f"HELLO NUMBER {i}"})
    (evalset / "evalset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = []
    for i in range(4):
        write_audio(tmp_path / "train" / f"{i}.wav", speech_like(rng, 1.2))
        train.append({"id": str(i), "path": str(tmp_path / "train" / f"{i}.wav")})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    return codecs, evalset, tmp_path / "train.jsonl"


def command(codecs, evalset, train, out, steps=3) -> list[str]:
    return ["recipe", "codec-eval", *(a for n, p in codecs.items() for a in ("--codec", f"{n}={p}")),
            "--ref", str(evalset), "--out", str(out), "--lm-steps", str(steps),
            "--metrics", "stoi,pesq", "--workers", "1", "--device", "cpu",
            "--set", f"token_lm.speech={train}", "token_lm.crop_seconds=0.5",
            "token_lm.batch_size=4"]


def test_one_row_per_codec_and_the_floor_then_a_rerun_reuses_everything(material, tmp_path):
    codecs, evalset, train = material
    out = tmp_path / "out"
    assert main(command(codecs, evalset, train, out)) == 0

    table = (out / "table.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| a", "| b", "| clean"]
    assert "LM ppl" in table[0] and "STOI" in table[0] and "PESQ" in table[0]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert list(rows) == ["a", "b", "clean"]
    for name in ("a", "b", "clean"):
        assert math.isfinite(rows[name]["stoi"]) and math.isfinite(rows[name]["pesq"])
    assert rows["clean"]["stoi"] == pytest.approx(1.0) and "token_lm" not in rows["clean"]
    for name in "ab":
        ppl = rows[name]["token_lm"]
        assert 1 <= ppl["overall"] < 10 * 64 and len(ppl["per_codebook"]) == 8
        assert all(math.isfinite(p) for p in ppl["per_codebook"])
        assert math.isfinite(ppl["train_loss"])
        # The first subset only: the other holds the same utterances.
        resynth = sorted((out / "resynth").glob(f"{name}-*/*/clean/*.wav"))
        assert [p.parent.parent.name for p in resynth] == ["general"] * 3
    assert rows["a"]["token_lm"] != rows["b"]["token_lm"]

    made = {p: p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and "report" not in p.parts}
    cache = (out / "report" / ".cache" / "scores.jsonl").read_text()
    assert main(command(codecs, evalset, train, out)) == 0
    assert (out / "report" / ".cache" / "scores.jsonl").read_text() == cache
    again = {p: p.stat().st_mtime_ns for p in made}
    kept = [p for p in made if p.name not in ("table.md", "results.json", "evalset.jsonl")]
    assert kept and all(again[p] == made[p] for p in kept)
    assert json.loads((out / "results.json").read_text())["rows"] == rows

    # Other token-LM settings train anew; the resyntheses and scores stay.
    assert main(command(codecs, evalset, train, out, steps=2)) == 0
    assert len(list((out / "token_lm").glob("a-*.json"))) == 2
    assert (out / "report" / ".cache" / "scores.jsonl").read_text() == cache


def test_missing_folders_are_one_line_errors(material, tmp_path, capsys):
    codecs, evalset, train = material
    out = tmp_path / "out"
    missing = {"a": tmp_path / "nowhere"}
    assert main(command(missing, evalset, train, out)) == 2
    assert capsys.readouterr().err.strip() == (
        f"l3se: error: --codec a: {tmp_path / 'nowhere'} is not a saved codec "
        "(no model.safetensors)")
    assert main(command(codecs, tmp_path / "no-evalset", train, out)) == 2
    assert "--ref: no evalset.jsonl in" in capsys.readouterr().err
    assert main(command(codecs, evalset, tmp_path / "no-train.jsonl", out)) == 2
    assert "token_lm.speech:" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_both_configs_load_with_known_metrics_and_a_buildable_token_lm(name):
    from l3se.evaluation.registry import parse_selection
    from l3se.models.token_lm import TokenLM
    from l3se.models.tokens import TokenLayout
    from recipes.codec_eval import load

    cfg = load(name)
    assert parse_selection(cfg.metrics)
    with torch.device("meta"):
        lm = TokenLM(cfg.token_lm.llm, TokenLayout(8, 1024))
    # bos + 8 tokens per 80 ms frame of a crop fit the LM's positions.
    positions = 1 + 8 * math.ceil(cfg.token_lm.crop_seconds * 12.5)
    assert positions <= lm.llm.config.max_position_embeddings
