"""Model-based metrics on tiny random-initialised models of the real transformers classes,
saved to a folder and loaded by path, exactly as a user's local checkpoint would be."""

import json
import logging

import numpy as np
import pytest
import torch
import transformers as tf

from l3se.evaluation import evaluate, runner
from l3se.evaluation.base import Pair
from l3se.evaluation.registry import build_metrics

SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def _save(model, folder, extractor=None):
    torch.manual_seed(0)
    model.save_pretrained(folder)
    (extractor or tf.Wav2Vec2FeatureExtractor(sampling_rate=16000)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    paths = {
        "sbs": _save(tf.HubertModel(tf.HubertConfig(**SMALL)), root / "hubert") + "#2",
        "lps": _save(_emitting_ctc(), root / "phoneme"),
        "sim_wavlm": _save(tf.WavLMForXVector(tf.WavLMConfig(
            tdnn_dim=(16, 16), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=8,
            num_buckets=8, max_bucket_distance=20, **SMALL)), root / "wavlm_sv"),
        "whisper": _tiny_whisper(root / "whisper"),
        "utmos": _fake_utmos_hub(root / "utmos"),
    }
    return paths


def _emitting_ctc():
    """A random phoneme CTC model that never predicts the blank (id 0), so every signal gets a
    non-empty phoneme sequence that depends on its content."""
    model = tf.Wav2Vec2ForCTC(tf.Wav2Vec2Config(vocab_size=12, pad_token_id=0, **SMALL))
    with torch.no_grad():
        model.lm_head.bias[0] = -1e4
    return model


def _tiny_whisper(folder):
    """WhisperForConditionalGeneration + processor with a byte-level vocabulary of 261 tokens."""
    folder.mkdir()
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                "<|notimestamps|>"]
    vocab.update({s: len(vocab) + i for i, s in enumerate(specials)})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = tf.WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    proc = tf.WhisperProcessor(tf.WhisperFeatureExtractor(feature_size=80), tok)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    cfg = tf.WhisperConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=32, decoder_ffn_dim=32, max_target_positions=64,
                           pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                           decoder_start_token_id=sot)
    model = tf.WhisperForConditionalGeneration(cfg)
    model.generation_config = tf.GenerationConfig(decoder_start_token_id=sot, eos_token_id=eot,
                                                  pad_token_id=eot)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return str(folder)


def _fake_utmos_hub(folder):
    """A torch.hub folder whose ``utmos22_strong`` returns a MOS from signal energy."""
    folder.mkdir()
    (folder / "hubconf.py").write_text(
        "import torch\n\n"
        "class Predictor(torch.nn.Module):\n"
        "    def forward(self, wave, sr):\n"
        "        return 1.0 + 4.0 * torch.sigmoid(wave.pow(2).mean(-1).log10() + 2.0)\n\n"
        "def utmos22_strong(**kwargs):\n"
        "    return Predictor()\n"
    )
    return str(folder)


@pytest.fixture(scope="module")
def metrics(tiny):
    built, skipped = build_metrics(["sbs", "lps", "sim_wavlm", "wer_whisper", "dwer_whisper",
                                    "utmos"], tiny, local_only=True)
    assert skipped == []
    return {m.name: m for m in built}


def test_identical_signals_score_one(metrics, speech):
    wav = speech[0][1]
    pair = Pair(est=wav, est_aligned=wav, ref=wav.copy(), text="the quick brown fox")
    assert metrics["sbs"].score(pair)["sbs"] == pytest.approx(1.0, abs=1e-6)
    assert len(metrics["lps"].phonemes(wav)) > 10
    assert metrics["lps"].score(pair)["lps"] == 1.0
    assert metrics["sim_wavlm"].score(pair)["sim_wavlm"] == pytest.approx(1.0, abs=1e-5)
    # Identical signals, identical transcripts: no edits, whatever the tiny model says.
    assert metrics["dwer_whisper"].score(pair)["dwer_whisper_errors"] == 0
    assert isinstance(metrics["wer_whisper"].score(pair)["wer_whisper_hyp"], str)
    # The fake predictor's own formula: the metric passes its value through unchanged.
    expected = 1.0 + 4.0 / (1.0 + np.exp(-(np.log10(np.mean(wav.astype(np.float64) ** 2)) + 2.0)))
    assert metrics["utmos"].score(pair)["utmos"] == pytest.approx(expected, rel=1e-4)


def test_different_signals_score_lower(metrics, speech):
    a, b = speech[0][1], speech[1][1]
    n = min(len(a), len(b))
    pair = Pair(est=b[:n], est_aligned=b[:n], ref=a[:n])
    assert metrics["sbs"].score(pair)["sbs"] < 1.0
    assert metrics["sim_wavlm"].score(pair)["sim_wavlm"] < 1.0
    assert metrics["lps"].score(pair)["lps"] < 1.0


def test_absent_model_logs_one_skip_line(tmp_path, evalset, caplog):
    with caplog.at_level(logging.WARNING, logger="l3se.evaluation"):
        res = evaluate(evalset, {"clean": None}, metrics="sisdr,sbs",
                       models={"sbs": str(tmp_path / "no-such-model")}, progress=False, workers=1)
    line = f"skipped: sbs ({tmp_path / 'no-such-model'} not available)"
    assert [r.getMessage() for r in caplog.records].count(line) == 1
    assert res.metrics == ["sisdr"] and res.skipped == [line]


def test_absent_hub_model_is_skipped_in_workers_too(tmp_path, evalset, caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="l3se.evaluation"):
        res = evaluate(evalset, {"clean": None}, metrics="utmos,lps", progress=False, workers=2)
    assert res.skipped == ["skipped: utmos (tarepan/SpeechMOS:v1.2.0 not available)",
                           "skipped: lps (facebook/wav2vec2-lv-60-espeak-cv-ft not available)"]
    assert [r.getMessage() for r in caplog.records if r.name == runner.__name__] == res.skipped
    assert res.rows and res.metrics == []


def test_model_metrics_through_evaluate(tmp_path, evalset, tiny):
    res = evaluate(evalset, {"clean": None}, metrics="sbs,lps,utmos", models=tiny,
                   out_dir=tmp_path / "r", progress=False, workers=1)
    assert res.skipped == [] and all(r["sbs"] == pytest.approx(1.0, abs=1e-6) for r in res.rows)
    assert "SBS" in (tmp_path / "r" / "comparison.csv").read_text()
