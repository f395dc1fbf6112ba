"""The quickstart end to end: every stage, the enhanced eval set and the evaluation table."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import recipes.quickstart as quickstart_recipe
from data_sim.audio import write_audio
from l3se import enhancer
from l3se.card import read_card
from l3se.cli import main
from l3se.models.s2t import WavS2T
from recipes.codec3_ablation import judge_cer
from recipes.quickstart import (
    STEPS,
    QuickstartConfig,
    held_out_views,
    promotion_failures,
    stage_overrides,
)
from recipes.stages import PIPELINE, STAGES

SMOKE_STARTER = [
    "speech_hours=0.03", "train_speakers=3", "test_speakers=2", "test_fraction=0.3",
    "engines=[espeak-ng]", "engine_weights=[1.0]", "noise_minutes=0.6", "noise_clip_seconds=4",
    "n_rirs=6",
]


def quickstart(tmp_path, *extra) -> int:
    return main([
        "recipe", "quickstart", "--data", str(tmp_path / "data"), "--runs", str(tmp_path / "runs"),
        "--steps", "0.001", "--metrics", "sisdr", "--workers", "1",
        "--starter", *SMOKE_STARTER, "--evalset", "n_utterances=3", "min_seconds=1",
        "--baselines", *extra,
    ])


def test_smoke_run_trains_every_stage_enhances_and_reports(tmp_path, capsys, monkeypatch):
    assert quickstart(tmp_path) == 0
    out = capsys.readouterr().out
    runs = tmp_path / "runs"
    for stage, steps in STEPS["tiny"].items():
        assert (runs / stage / "model").is_dir(), stage
        assert (f"[quickstart] {stage}: done" in out) == (steps > 0), stage
    # codec-2 has 0 steps at tiny scale: its model is codec-1's, file for file.
    assert "[quickstart] codec-2: 0 steps at tiny scale, codec-1's model as it is" in out
    for f in (runs / "codec-1" / "model").iterdir():
        assert (runs / "codec-2" / "model" / f.name).read_bytes() == f.read_bytes()
    evalset = tmp_path / "data" / "evalset"
    noisy = sorted(p.relative_to(evalset) for p in evalset.glob("*/noisy/*.wav"))
    assert noisy and sorted(p.relative_to(runs / "enhanced") for p in
                            (runs / "enhanced").glob("*/noisy/*.wav")) == noisy
    assert len(list((runs / "codec").glob("*/clean/*.wav"))) == len(noisy)
    assert len(list((runs / "direct").glob("*/noisy/*.wav"))) == len(noisy)
    table = out[out.index("system"):]
    for system in ("noisy", "enhanced", "direct", "codec", "clean"):
        assert re.search(rf"^{system}\s+-?\d", table, re.M), table
    assert (runs / "report").is_dir()
    card = read_card(runs / "lm" / "model")
    assert card.steps == {s: n and max(2, math.ceil(n * 0.001)) for s, n in STEPS["tiny"].items()}
    assert "| enhanced |" in card.measured
    # STOI, WER and speaker similarity were not measured: the card must not look clean.
    assert "STOI: not measured" in card.warning

    # A second run reuses every finished stage and file instead of training again. Promotion
    # needs STOI, WER and speaker similarity no worse than noisy's and the old default's; with
    # only SI-SDR measured it is refused, then (verdict stood in) the default is replaced.
    default = tmp_path / "pretrained" / "default"
    (default / "lm").mkdir(parents=True)
    (default / "lm" / "stale.safetensors").write_bytes(b"old")
    monkeypatch.setattr(enhancer, "DEFAULT_MODEL_DIR", default)
    promote = ["recipe", "quickstart", "--data", str(tmp_path / "data"), "--runs", str(runs),
               "--steps", "0.001", "--metrics", "sisdr", "--workers", "1", "--baselines",
               "--promote"]
    assert main(promote) == 0
    again = capsys.readouterr().out
    assert "the current default is not compared" in again  # the stand-in is no model
    assert "default model left as it was: general STOI: not measured" in again
    assert (default / "lm" / "stale.safetensors").is_file()
    monkeypatch.setattr(quickstart_recipe, "promotion_failures", lambda *a: [])
    assert main(promote) == 0
    again = capsys.readouterr().out
    assert all(f"[quickstart] {stage}: reusing" in again for stage in STEPS["tiny"])
    assert ": training" not in again
    assert f"default model updated: {default}" in again
    assert sorted(p.relative_to(default) for p in default.rglob("*")) == sorted(
        p.relative_to(runs / "lm" / "model") for p in (runs / "lm" / "model").rglob("*"))
    assert [p.name for p in default.parent.iterdir()] == ["default"]  # no staging left

    # The codec-3 ablation from this quickstart: every objective trains, each codec resynthesises
    # the references, an LM trains on each codec's tokens and the table has a row per system.
    variants = ["tiny", "tiny_asr", "tiny_ttr", "tiny_llmcodec"]
    ablation = tmp_path / "ablation"
    assert main(["recipe", "codec3-ablation", "--variants", ",".join(variants), "--runs",
                 str(runs), "--data", str(tmp_path / "data"), "--out", str(ablation),
                 "--steps", "2", "--ttr-steps", "2", "--judge-steps", "2", "--lm-steps", "2",
                 "--files", "2", "--metrics", "stoi", "--workers", "1"]) == 0
    lines = [[c.strip() for c in line.strip("|").split("|")]
             for line in (ablation / "table.md").read_text().splitlines()]
    head, rows = lines[0], {row[0]: dict(zip(lines[0], row)) for row in lines[2:]}
    assert head == ["system", "mel dist.", "STOI", "DNSMOS", "WER-CV %", "judge CER %",
                    "LM val loss", "LM perplexity"]
    assert list(rows) == ["codec-2 resynth", *(f"{v} resynth" for v in variants), "noisy",
                          *(f"{v} enhanced" for v in variants), "clean"]
    for v in variants:
        assert float(rows[f"{v} resynth"]["mel dist."]) > 0
        assert 0 < float(rows[f"{v} enhanced"]["STOI"]) <= 1
        assert float(rows[f"{v} enhanced"]["LM val loss"]) > 0
        assert len(list((ablation / "resynth" / v).rglob("*.wav"))) == 2
    # The judge (2 steps here) transcribes the clean references and each codec's resynthesis,
    # nothing else; what its CER is made of is test_judge_cer_scores_each_rows_own_files's.
    judged = {system for system, row in rows.items() if row["judge CER %"]}
    assert judged == {"codec-2 resynth", *(f"{v} resynth" for v in variants), "clean"}
    assert (tmp_path / "data" / "starter" / "speech" / "train_words.jsonl").is_file()

    # The codec sweep on the same material: each design trains, is scored, and is reused when
    # run again with the same settings.
    sweep = tmp_path / "sweep"
    args = ["recipe", "codec-sweep", "--designs", "baseline,mel+interp+hop160", "--data",
            str(tmp_path / "data"), "--out", str(sweep), "--steps", "2", "--files", "2",
            "--metrics", "stoi", "--baselines"]
    assert main(args) == 0
    assert "[codec-sweep] baseline: 2 steps" in capsys.readouterr().out
    lines = (sweep / "table.md").read_text().splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "clean", "baseline", "mel+interp+hop160", "noisy"]
    assert all(0 < float(line.split("|")[5]) <= 1 for line in lines[2:])  # STOI
    assert (sweep / "plot.png").stat().st_size > 10_000
    assert main(args) == 0
    assert "steps" not in capsys.readouterr().out.split("| design")[0]


def test_judge_cer_scores_each_rows_own_files(tmp_path, monkeypatch):
    """The ablation's judge CER: a stand-in judge that hears the clean references exactly and
    each resynthesis with known mistakes gives 0 on the references and the corpus CER of those
    mistakes on the resynthesis."""
    texts = {"a": "the cat sat", "b": "a dog ran"}
    # What the stand-in judge hears, by file length: a resynthesis is shorter than its reference.
    heard = {1600: "the cat sat", 1601: "a dog ran", 800: "the cat sad", 801: "a dog"}
    rows = []
    for i, (uid, text) in enumerate(texts.items()):
        write_audio(tmp_path / "general" / "clean" / f"{uid}.wav", np.full(1600 + i, 0.1))
        write_audio(tmp_path / "resynth" / "general" / "clean" / f"{uid}.wav", np.full(800 + i, 0.1))
        rows.append({"id": uid, "subset": "general", "clean": f"general/clean/{uid}.wav",
                     "text": text.upper()})
    manifest = tmp_path / "evalset.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    class Judge:
        def eval(self):
            return self

        def normalize(self, text):
            return text.lower()

        def transcribe(self, wav):
            return [heard[wav.shape[-1]]]

    monkeypatch.setattr(WavS2T, "from_pretrained", lambda path: Judge())
    assert judge_cer(tmp_path / "judge", manifest, None) == 0
    # One substituted and four deleted characters of 20.
    assert judge_cer(tmp_path / "judge", manifest, tmp_path / "resynth") == pytest.approx(25.0)


def test_the_quickstart_trains_the_pipeline_in_order():
    assert list(STEPS["tiny"]) == list(STEPS["small"]) == PIPELINE == ["codec-1", "codec-2", "s2t", "distill", "lm"]


def test_only_a_stage_that_starts_from_a_model_can_be_given_0_steps():
    # 0 steps copies the stage's init_from model; a stage without one would have no model.
    zero = {s for steps in STEPS.values() for s, n in steps.items() if n == 0}
    assert zero == {"codec-2"}
    assert all("init_from" in STAGES[s].upstream for s in zero)


def test_the_card_counts_the_steps_each_reused_stage_was_trained_for(tmp_path):
    cfg = quickstart_recipe.QuickstartConfig(runs=tmp_path)
    for stage, steps in (("codec-1", 16000), ("s2t", 800), ("distill", 10000), ("lm", 5000)):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "config.yaml").write_text(f"train:\n  max_steps: {steps}\n")
    assert quickstart_recipe.trained_steps(cfg) == {
        "codec-1": 16000, "codec-2": 0, "s2t": 800, "distill": 10000, "lm": 5000}


def test_the_card_counts_the_steps_of_the_run_a_stage_continued(tmp_path):
    runs = tmp_path / "runs"
    cfg = quickstart_recipe.QuickstartConfig(runs=runs)
    earlier = tmp_path / "codec1-16k"
    earlier.mkdir()
    (earlier / "config.yaml").write_text("train:\n  max_steps: 16000\ninit_from: null\n")
    stages = {"codec-1": f"init_from: {earlier}/model", "codec-2": f"init_from: {runs}/codec-1/model",
              "distill": "init_from: null"}
    for stage, init_from in stages.items():
        (runs / stage).mkdir(parents=True)
        (runs / stage / "config.yaml").write_text(f"train:\n  max_steps: 1000\n{init_from}\n")
    # codec-1 continued a run outside the chain: both runs' steps. codec-2 started from
    # codec-1's model, whose steps are on codec-1's line.
    assert quickstart_recipe.trained_steps(cfg) == {
        "codec-1": 17000, "codec-2": 1000, "s2t": 0, "distill": 1000, "lm": 0}


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["recipe", "quickstart", "--steps", "0"]) == 2
    assert "--steps must be positive" in capsys.readouterr().err
    assert main(["recipe", "quickstart", "--hold-out", "flite", "--promote"]) == 2
    assert "cannot be promoted" in capsys.readouterr().err


def test_a_held_out_engine_trains_on_the_other_voices_and_is_measured_apart(tmp_path):
    speech = tmp_path / "data" / "starter" / "speech"
    speech.mkdir(parents=True)
    engines = {"1": "espeak-ng", "2": "flite", "3": "espeak-ng", "4": "flite"}
    (speech / "speakers.json").write_text(json.dumps({s: {"engine": e} for s, e in engines.items()}))
    (speech / "train.jsonl").write_text("".join(
        json.dumps({"id": f"{s}-0", "speaker": int(s)}) + "\n" for s in ("1", "2")))
    evalset = tmp_path / "data" / "evalset"
    (evalset / "general").mkdir(parents=True)
    (evalset / "evalset.jsonl").write_text("".join(
        json.dumps({"id": f"{s}-0", "subset": "general", "speaker": int(s)}) + "\n"
        for s in ("3", "4")))
    cfg = QuickstartConfig(data=tmp_path / "data", runs=tmp_path / "runs", hold_out="flite")
    views = held_out_views(cfg, evalset)
    assert [(title, report.name) for title, _, report in views] == [
        ("flite's voices, held out from training", "report-flite"),
        ("the other voices", "report-others")]
    def speakers(manifest):
        return [json.loads(x)["speaker"] for x in manifest.read_text().splitlines()]

    assert [speakers(view / "evalset.jsonl") for _, view, _ in views] == [[4], [3]]
    assert speakers(speech / "train_without_flite.jsonl") == [1]
    assert f"data.speech={cfg.data}/starter/speech/train_without_flite.jsonl" in \
        stage_overrides("codec-1", cfg)
    (speech / "train.jsonl").write_text(json.dumps({"id": "2-0", "speaker": 2}) + "\n")
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        held_out_views(cfg, evalset)


def scores(stoi, wer, sim, dnsmos=1.0):
    return {"stoi": {"value": stoi}, "wer": {"value": wer}, "sim": {"value": sim},
            "dnsmos_ovrl": {"value": dnsmos}}


def test_promotion_needs_stoi_wer_and_similarity_not_dnsmos():
    noisy = {"general": scores(0.70, 90.0, 0.60), "low": scores(0.60, 95.0, 0.50)}
    # The first shipped model: far better DNSMOS, worse everything else.
    babble = {"general": scores(0.33, 98.0, 0.40, 2.5), "low": scores(0.30, 98.0, 0.40, 2.5),
              "all": scores(0.3, 98.0, 0.4)}
    failures = promotion_failures({"noisy": noisy, "enhanced": babble}, "enhanced", ["noisy"])
    assert len(failures) == 6 and "low WER: 98.000 vs noisy 95.000" in failures
    good = {"general": scores(0.80, 80.0, 0.70), "low": scores(0.61, 95.0, 0.55)}
    assert promotion_failures({"noisy": noisy, "enhanced": good}, "enhanced", ["noisy"]) == []
    # The current default is a rival too; a rival without a metric is not compared.
    default = {"general": scores(0.85, 70.0, 0.70), "low": {}}
    summary = {"noisy": noisy, "enhanced": good, "default": default}
    assert promotion_failures(summary, "enhanced", ["noisy", "default"]) == [
        "general STOI: 0.800 vs default 0.850", "general WER: 80.000 vs default 70.000"]
    missing = {"general": {"stoi": {"value": 0.9}}}
    assert promotion_failures({"enhanced": missing}, "enhanced", ["noisy"]) == [
        "general WER: not measured", "general SIM-GE2E: not measured"]
    # The closed-vocabulary judge's WER decides when it was measured.
    judged = {"general": {**scores(0.80, 99.0, 0.70), "wer_cv": {"value": 20.0}}}
    noisy_judged = {"general": {**scores(0.70, 90.0, 0.60), "wer_cv": {"value": 30.0}}}
    assert promotion_failures({"noisy": noisy_judged, "enhanced": judged}, "enhanced",
                              ["noisy"]) == []
