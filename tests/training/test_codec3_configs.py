"""Issue 27 items 8, 9, 10, 12, 13 and 18: what the paper configs train on, and the data filters
they rely on."""

import json

import numpy as np
import pytest
import soundfile as sf

from data_sim.dataset import DataConfig, select_speech
from data_sim.sources import AudioItem, read_jsonl
from l3se.config import load_config, to_dict
from recipes.stages import STAGES, resolve_config


def config(stage, name):
    return load_config(STAGES[stage].config_class, resolve_config(STAGES[stage].folder, name))


def without(cfg, *keys):
    """The config as a dict without ``keys`` ("a.b") and its output_dir."""
    d = to_dict(cfg)
    for key in (*keys, "train.output_dir"):
        *path, last = key.split(".")
        node = d
        for part in path:
            node = node[part]
        node.pop(last)
    return d


def test_codec3_trains_the_encoder_as_the_seed_did():
    assert config("codec-3", "paper").train_parts is None


@pytest.mark.parametrize("variant, base, objective", [
    ("paper_llmcodec", "paper_llmcodec_base", ("llm_codec", "optim.groups")),
    ("paper_asr_text", "paper_asr_text_base", ("asr",)),
    ("paper_asr", "paper", ("asr",)),
    ("paper_ttr", "paper", ("ttr", "summarizer_from")),
])
def test_each_variant_changes_only_its_objective(variant, base, objective):
    assert without(config("codec-3", variant), *objective) == \
        without(config("codec-3", base), *objective)


def test_llmcodec_takes_the_seeds_optimizers():
    optim = config("codec-3", "paper_llmcodec").optim
    assert (optim.optimizer, optim.lr, optim.momentum) == ("sgd", 5e-6, 0.9)
    (group,) = optim.groups
    assert (group.optimizer, group.lr, group.weight_decay) == ("adamw", 1e-4, 0.0)
    assert set(group.params) == {"objectives.llm_codec.audio_embed", "objectives.llm_codec.heads"}


def test_asr_and_ttr_weights_keep_the_seeds_balance():
    # 15 x DAC-mel is 0.77-0.89 of the seed's 45 x mel on starter clips: the seed's 30 stands.
    assert config("codec-3", "paper_asr").asr.weight == 30.0
    assert config("codec-3", "paper_ttr").ttr.weight == 30.0


def test_whole_utterance_configs_cap_the_length_and_keep_english():
    for name in ("paper_asr_text", "paper_llmcodec"):
        data = config("codec-3", name).data
        assert data.mix.segment_seconds is None and data.max_seconds <= 15.0, name
        assert data.languages == ["en"], name
    assert config("codec-3", "paper_asr_text").asr.max_tokens >= 96
    assert config("codec-3", "paper_llmcodec").llm_codec.max_text_tokens >= 96


@pytest.mark.parametrize("name", ["paper", "paper_ctc"])
def test_s2t_learns_the_language_distill_runs_on(name):
    s2t = config("s2t", name).data
    assert s2t.speech == config("distill", "paper").data.speech
    assert s2t.mix.segment_seconds is None and s2t.max_seconds is not None


def test_long_and_foreign_utterances_are_dropped_not_cropped(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    rows = [{"path": "a.wav", "id": i, "duration": d, "language": lang}
            for i, d, lang in (("short", 3.0, "en"), ("long", 12.0, "en"), ("zh", 3.0, "zh"),
                               ("unknown", 3.0, None))]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = read_jsonl(tmp_path / "m.jsonl")
    assert [i.language for i in items] == ["en", "en", "zh", None]
    kept = select_speech(items, DataConfig(max_seconds=10.0, languages=["en"]))
    assert [i.id for i in kept] == ["short"]
    assert len(select_speech(items, DataConfig())) == 4
    with pytest.raises(ValueError, match="no utterance of at most 1.0 s"):
        select_speech([AudioItem("x", "x.wav", duration=2.0)], DataConfig(max_seconds=1.0))
