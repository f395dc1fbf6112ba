"""Stages lm and distill started from exported weights (``init_from``): the first step trains
the exported model itself, and the run exports the trained one."""

from __future__ import annotations

import pytest
import torch

from l3se.config import ConfigError, load_config
from l3se.enhancer import DEFAULT_MODEL_DIR
from l3se.models.lm import SpeechLM
from l3se.models.ni_encoder import NIEncoder
from l3se.training.distill_task import DistillTask
from l3se.training.lm_task import LMTask
from recipes.stages import run_stage
from recipes.train_distill import DistillRecipeConfig
from recipes.train_distill import build_task as build_distill
from recipes.train_lm import LMRecipeConfig
from recipes.train_lm import build_task as build_lm
from tests.training.test_lm_recipe import tiny_ni_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


def data_overrides(corpus, out, steps=1) -> list[str]:
    return [
        f"train.output_dir={out}", f"train.max_steps={steps}", "train.batch_size=2",
        "train.num_workers=0", "train.progress=false", f"train.val_every={steps}",
        "train.val_batches=1", "optim.warmup_steps=1",
        *[f"{split}.{key}" for split in ("data", "valid") for key in (
            f"speech={corpus / 'speech.jsonl'}", f"noise={corpus / 'noise'}",
            f"rir={corpus / 'rir'}", "mix.segment_seconds=1.0")],
    ]


def lm_overrides(corpus, out, *extra) -> list[str]:
    return [*data_overrides(corpus, out), f"ni_encoder={DEFAULT_MODEL_DIR / 'ni_encoder'}",
            f"codec={DEFAULT_MODEL_DIR / 'codec'}", f"init_from={DEFAULT_MODEL_DIR / 'lm'}",
            *extra]


def distill_overrides(corpus, out, *extra) -> list[str]:
    return [*data_overrides(corpus, out), "loss.targets=self", "s2t=null",
            f"init_from={DEFAULT_MODEL_DIR / 'ni_encoder'}", *extra]


def first_step_weights(monkeypatch, task_class, part: str) -> dict[str, torch.Tensor]:
    """Filled with ``part``'s weights as the first training step sees them."""
    seen: dict[str, torch.Tensor] = {}
    step = task_class.training_step

    def recording(self, batch, n):
        if not seen:
            seen.update({k: v.clone() for k, v in getattr(self, part).state_dict().items()})
        return step(self, batch, n)

    monkeypatch.setattr(task_class, "training_step", recording)
    return seen


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_lm_trains_from_the_exported_weights(corpus, tmp_path, monkeypatch):
    exported = SpeechLM.from_pretrained(DEFAULT_MODEL_DIR / "lm").state_dict()
    seen = first_step_weights(monkeypatch, LMTask, "lm")
    out = run_stage("lm", "tiny", lm_overrides(corpus, tmp_path / "lm"))
    assert_same(seen, exported)
    trained = SpeechLM.from_pretrained(out / "model" / "lm").state_dict()
    # Its own architecture, not the tiny config's lm section.
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in exported.items()}
    assert changed(trained, exported)


def test_distill_with_self_targets_trains_from_the_exported_encoder(corpus, tmp_path,
                                                                     monkeypatch):
    exported = NIEncoder.from_pretrained(DEFAULT_MODEL_DIR / "ni_encoder").state_dict()
    seen = first_step_weights(monkeypatch, DistillTask, "student")
    teacher = first_step_weights(monkeypatch, DistillTask, "teacher")
    out = run_stage("distill", "tiny", distill_overrides(corpus, tmp_path / "distill"))
    assert_same(seen, exported)
    assert_same(teacher, exported)
    assert changed(NIEncoder.from_pretrained(out / "model").state_dict(), exported)


def test_init_from_mistakes_are_config_errors(corpus, tmp_path):
    tiny_ni_encoder().save_pretrained(tmp_path / "other_ni")
    cases = [
        (LMRecipeConfig, build_lm, lm_overrides(corpus, tmp_path, f"ni_encoder={tmp_path}/other_ni"),
         "init_from: .* does not fit ni_encoder and codec"),
        (LMRecipeConfig, build_lm, lm_overrides(corpus, tmp_path, "audio_vocab_from_codec=true"),
         "audio_vocab_from_codec would overwrite init_from"),
        (LMRecipeConfig, build_lm, lm_overrides(corpus, tmp_path, f"init_from={tmp_path}/nope"),
         "init_from: .*nope does not exist"),
        (DistillRecipeConfig, build_distill, distill_overrides(corpus, tmp_path, "init_from=null"),
         "loss.targets 'self' .* set init_from"),
        (DistillRecipeConfig, build_distill,
         distill_overrides(corpus, tmp_path, "student={}"), "at most one of 'student'"),
    ]
    for schema, build, overrides, message in cases:
        stage = "lm" if schema is LMRecipeConfig else "distill"
        cfg = load_config(schema, f"recipes/configs/{stage}/tiny.yaml", overrides)
        with pytest.raises(ConfigError, match=message):
            build(stage, cfg)
