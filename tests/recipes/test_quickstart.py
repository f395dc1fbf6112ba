"""The quickstart end to end: every stage, the enhanced eval set and the evaluation table."""

from __future__ import annotations

import re

import pytest

import recipes.quickstart as quickstart_recipe
from l3se import enhancer
from l3se.cli import main
from recipes.quickstart import STEPS, low_snr_gain

SMOKE_STARTER = [
    "speech_hours=0.03", "train_speakers=3", "test_speakers=2", "test_fraction=0.3",
    "engines=[espeak-ng]", "engine_weights=[1.0]", "noise_minutes=0.6", "noise_clip_seconds=4",
    "n_rirs=6",
]


def quickstart(tmp_path, *extra) -> int:
    return main([
        "recipe", "quickstart", "--data", str(tmp_path / "data"), "--runs", str(tmp_path / "runs"),
        "--steps", "0.001", "--metrics", "sisdr", "--workers", "1",
        "--starter", *SMOKE_STARTER, "--evalset", "n_utterances=3", "min_seconds=1", *extra,
    ])


def test_smoke_run_trains_every_stage_enhances_and_reports(tmp_path, capsys, monkeypatch):
    assert quickstart(tmp_path) == 0
    out = capsys.readouterr().out
    runs = tmp_path / "runs"
    for stage in STEPS:
        assert (runs / stage / "model").is_dir(), stage
        assert f"[quickstart] {stage}: done" in out
    evalset = tmp_path / "data" / "evalset"
    noisy = sorted(p.relative_to(evalset) for p in evalset.glob("*/noisy/*.wav"))
    assert noisy and sorted(p.relative_to(runs / "enhanced") for p in
                            (runs / "enhanced").glob("*/noisy/*.wav")) == noisy
    assert len(list((runs / "codec").glob("*/clean/*.wav"))) == len(noisy)
    table = out[out.index("system"):]
    for system in ("noisy", "enhanced", "codec", "clean"):
        assert re.search(rf"^{system}\s+-?\d", table, re.M), table
    assert (runs / "report").is_dir()

    # A second run reuses every finished stage and file instead of training again; with
    # --promote and a gain (DNSMOS is not computed here, so the gain is stood in) it replaces
    # the default model.
    default = tmp_path / "pretrained" / "default"
    (default / "lm").mkdir(parents=True)
    (default / "lm" / "stale.safetensors").write_bytes(b"old")
    monkeypatch.setattr(enhancer, "DEFAULT_MODEL_DIR", default)
    monkeypatch.setattr(quickstart_recipe, "low_snr_gain", lambda summary: 0.25)
    assert main(["recipe", "quickstart", "--data", str(tmp_path / "data"), "--runs", str(runs),
                 "--steps", "0.001", "--metrics", "sisdr", "--workers", "1", "--promote"]) == 0
    again = capsys.readouterr().out
    assert all(f"[quickstart] {stage}: reusing" in again for stage in STEPS)
    assert ": training" not in again
    assert f"default model updated: {default}" in again
    assert sorted(p.relative_to(default) for p in default.rglob("*")) == sorted(
        p.relative_to(runs / "lm" / "model") for p in (runs / "lm" / "model").rglob("*"))
    assert [p.name for p in default.parent.iterdir()] == ["default"]  # no staging left


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["recipe", "quickstart", "--steps", "0"]) == 2
    assert "--steps must be positive" in capsys.readouterr().err


def test_low_snr_gain_compares_dnsmos_on_the_low_subset():
    summary = {"noisy": {"low": {"dnsmos_ovrl": {"value": 1.2}}},
               "enhanced": {"low": {"dnsmos_ovrl": {"value": 1.5}}}}
    assert low_snr_gain(summary) == pytest.approx(0.3)
    assert low_snr_gain({"noisy": {"general": {}}, "enhanced": {"general": {}}}) is None
