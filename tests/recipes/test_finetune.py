"""``l3se recipe finetune`` end to end: a user's folders of clean speech (with transcripts) and
noise -> the bundled default fine-tuned for a few steps -> a model ``l3se enhance`` uses."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from data_sim.audio import audio_info, write_audio
from l3se.card import read_card
from l3se.cli import main
from l3se.enhancer import DEFAULT_MODEL_DIR, Enhancer
from l3se.models.codec import WavCodec
from l3se.models.lm import SpeechLM
from l3se.models.ni_encoder import NIEncoder
from tests.conftest import SR, speech_like

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def user_folders(tmp_path):
    """my/clean: 2 speakers x 3 recordings of 1.5-2.5 s, each with a .txt transcript;
    my/noise: 2 recordings."""
    rng = np.random.default_rng(0)
    clean = tmp_path / "my" / "clean"
    for spk in ("ann", "ben"):
        for i in range(3):
            write_audio(clean / spk / f"{i}.wav", speech_like(rng, 1.5 + 0.5 * i))
            (clean / spk / f"{i}.txt").write_text(f"recording {i} of {spk}\n")
    noise = tmp_path / "my" / "noise"
    for i in range(2):
        write_audio(noise / f"n{i}.wav", (0.05 * rng.standard_normal(3 * SR)).astype(np.float32))
    return clean, noise


def relative_change(after: torch.nn.Module, before: torch.nn.Module) -> float:
    a, b = after.state_dict(), before.state_dict()
    num = sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in b
              if b[k].is_floating_point())
    den = sum(float(b[k].float().norm() ** 2) for k in b if b[k].is_floating_point())
    return (num / den) ** 0.5


def test_finetune_starts_from_the_default_and_exports_a_usable_model(user_folders, tmp_path,
                                                                     capsys):
    clean, noise = user_folders
    out = tmp_path / "runs" / "finetune"
    args = ["recipe", "finetune", "--speech", str(clean), "--noise", str(noise), "--out",
            str(out), "--steps", "2", "--speaker-from-folder"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[finetune] distill: done" in printed and "[finetune] lm: done" in printed

    rows = [json.loads(x) for x in (out / "data" / "speech.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["text"].startswith("recording") for r in rows)
    assert {r["speaker"] for r in rows} == {"ann", "ben"}
    train = (out / "data" / "speech_train.jsonl").read_text().splitlines()
    valid = (out / "data" / "speech_valid.jsonl").read_text().splitlines()
    assert len(train) == 5 and len(valid) == 1 and not set(train) & set(valid)

    model = out / "model"
    # Trained: every fine-tuned part moved, a little, from the default's weights.
    for part, cls in (("lm", SpeechLM), ("ni_encoder", NIEncoder)):
        change = relative_change(cls.from_pretrained(model / part),
                                 cls.from_pretrained(DEFAULT_MODEL_DIR / part))
        assert 0 < change < 0.05, (part, change)
    codec, default_codec = (WavCodec.from_pretrained(d / "codec") for d in (model,
                                                                           DEFAULT_MODEL_DIR))
    assert relative_change(codec, default_codec) == 0
    run_config = (out / "lm" / "config.yaml").read_text()
    assert f"init_from: {DEFAULT_MODEL_DIR / 'lm'}" in run_config
    assert f"ni_encoder: {out / 'distill' / 'model'}" in run_config
    card = read_card(model)
    assert "fine-tuned on clean" in card.name and card.steps["lm (fine-tune)"] == 2
    assert "6 recordings" in card.trained_on and card.headline

    Enhancer.from_pretrained(model, device="cpu")
    noisy = tmp_path / "noisy.wav"
    rng = np.random.default_rng(1)
    write_audio(noisy, speech_like(rng, 1.3) + 0.05 * rng.standard_normal(int(1.3 * SR))
                .astype(np.float32))
    enhanced = tmp_path / "enhanced.wav"
    assert main(["enhance", str(noisy), str(enhanced), "--model", str(model), "-q",
                 "--no-progress"]) == 0
    info = audio_info(enhanced)
    assert (info.frames, info.sample_rate) == (audio_info(noisy).frames, SR)

    # Again: every stage is reused and the model rebuilt from them.
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "[finetune] distill: reusing" in again and "[finetune] lm: reusing" in again
    assert (model / "enhancer.yaml").is_file() and not (out / ".model.part").exists()


def test_lm_alone_reads_the_default_encoder(user_folders, tmp_path):
    clean, noise = user_folders
    out = tmp_path / "ft"
    assert main(["recipe", "finetune", "--speech", str(clean), "--noise", str(noise), "--out",
                 str(out), "--steps", "2", "--stages", "lm"]) == 0
    assert not (out / "distill").exists()
    assert relative_change(NIEncoder.from_pretrained(out / "model" / "ni_encoder"),
                           NIEncoder.from_pretrained(DEFAULT_MODEL_DIR / "ni_encoder")) == 0
    assert relative_change(SpeechLM.from_pretrained(out / "model" / "lm"),
                           SpeechLM.from_pretrained(DEFAULT_MODEL_DIR / "lm")) > 0


def test_user_mistakes_are_one_line_errors(user_folders, tmp_path, capsys):
    clean, noise = user_folders
    base = ["recipe", "finetune", "--out", str(tmp_path / "ft")]
    cases = [
        (["--speech", str(tmp_path / "nope"), "--noise", str(noise)], "folder not found"),
        (["--speech", str(clean), "--noise", str(noise), "--stages", "codec"], "--stages"),
        (["--speech", str(clean), "--noise", str(noise), "--base", str(tmp_path)],
         "--base: .* is not an enhancer model directory"),
        (["--speech", str(clean), "--noise", str(clean / "ann" / "0.txt")], "folder not found"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), err
