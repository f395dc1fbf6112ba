from pathlib import Path

import pytest
import torch

from data_sim.audio import load_audio
from l3se.cli import main
from l3se.config import load_config
from l3se.models.codec import WavCodec
from l3se.models.s2t import WavS2T
from l3se.models.weights import state_tensors
from l3se.training.s2t_task import S2TTask
from recipes.train_s2t import S2TRecipeConfig
from tests.models.tiny import tiny_codec_config

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "s2t"


@pytest.mark.parametrize("name", ["paper", "paper_ctc", "tiny", "tiny_ctc"])
def test_configs_load(name):
    cfg = load_config(S2TRecipeConfig, CONFIGS / f"{name}.yaml")
    assert cfg.model.objective == ("ctc" if name.endswith("ctc") else "ntp")
    assert cfg.data.mix.segment_seconds is None and cfg.data.mix.p_noise == 0.0
    assert cfg.tokenizer_from_data == name.startswith("tiny")


def test_paper_numbers():
    cfg = load_config(S2TRecipeConfig, CONFIGS / "paper.yaml")
    got = (cfg.train.batch_size, cfg.optim.warmup_steps, cfg.train.max_steps,
           cfg.optim.min_lr, cfg.optim.lr)
    assert got == (16, 20_000, 200_000, 1e-6, 1e-4)
    enc = cfg.model.encoder
    assert (enc.num_layers, enc.dim, enc.ff_dim, enc.num_heads) == (6, 1024, 4096, 16)
    assert cfg.model.llm.pretrained == "Qwen/Qwen3-0.6B" == cfg.model.tokenizer
    assert cfg.model.ssl.pretrained == "microsoft/wavlm-large" and cfg.model.ssl.frozen
    assert cfg.backbone_from == "runs/codec2-paper/model"


def test_missing_transcript_is_a_clear_error():
    batch = {"meta": [{"id": "a", "text": "hi"}, {"id": "b", "text": None}]}
    with pytest.raises(ValueError, match=r"\['b'\].*segment_seconds: null"):
        S2TTask.transcripts(batch)


@pytest.fixture
def codec_dir(tmp_path):
    torch.manual_seed(0)
    WavCodec(tiny_codec_config()).save_pretrained(tmp_path / "codec")
    return tmp_path / "codec"


def common_args(corpus, codec_dir):
    speech = str(corpus / "speech.jsonl")
    return [
        f"data.speech={speech}", f"valid.speech={speech}", f"backbone_from={codec_dir}",
        "train.batch_size=2", "train.num_workers=0", "train.val_every=2", "train.val_batches=1",
        "train.progress=false", "train.log_every=1", "model.encoder.dim=32",
        "model.encoder.ff_dim=64",
    ]


def test_trains_exports_and_resumes_from_the_cli(corpus, codec_dir, tmp_path):
    args = ["train", "s2t", "--config", "tiny", *common_args(corpus, codec_dir)]
    out = tmp_path / "run"
    assert main([*args, f"train.output_dir={out}", "train.max_steps=2"]) == 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000002"]
    tokenizer = out / "tokenizer" / "tokenizer.json"
    built_at = tokenizer.stat().st_mtime_ns
    model = WavS2T.from_pretrained(out / "model")
    codec = WavCodec.from_pretrained(codec_dir)
    for (k, a), (_, b) in zip(model.ssl.state_dict().items(), codec.ssl.state_dict().items()):
        assert torch.equal(a, b), k
    # The tokenizer was trained on the corpus transcripts: each word is one token.
    assert len(model.tokenize(["HELLO WORLD NUMBER 3"])[0]) == 4
    # Greedy decoding: one string per item, the same alone as in a batch, nothing at all for
    # max_tokens=0. (Equal lengths: the tiny WavLM's GroupNorm front end sees padding as signal.)
    clips = [torch.from_numpy(load_audio(p))[:16000] for p in
             sorted((corpus / "speech").rglob("*.flac"))[:2]]
    model.eval()
    with torch.no_grad():
        texts = model.transcribe(torch.stack(clips), max_tokens=3)
        alone = [model.transcribe(clip[None], max_tokens=3)[0] for clip in clips]
        assert model.transcribe(torch.stack(clips), max_tokens=0) == ["", ""]
    assert texts == alone and all(isinstance(t, str) for t in texts)

    # A second run with more steps continues from step 2 and lands exactly where one
    # uninterrupted 3-step run does (validation off: it only costs time here).
    args.append("valid=null")
    assert main([*args, f"train.output_dir={out}", "train.max_steps=3"]) == 0
    assert tokenizer.stat().st_mtime_ns == built_at
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step_00000002", "step_00000003"]
    straight = tmp_path / "straight"
    assert main([*args, f"train.output_dir={straight}", "train.max_steps=3"]) == 0
    resumed = state_tensors(WavS2T.from_pretrained(out / "model"))
    direct = state_tensors(WavS2T.from_pretrained(straight / "model"))
    changed = [k for k in resumed if not torch.equal(resumed[k], state_tensors(model)[k])]
    assert any(k.startswith("encoder.") for k in changed) and "mixture.logits" in changed
    assert not any(k.startswith(("llm.", "ssl.")) for k in changed)
    for k in resumed:
        assert torch.equal(resumed[k], direct[k]), k


def test_user_errors(corpus, tmp_path, capsys):
    speech = str(corpus / "speech.jsonl")
    missing = tmp_path / "missing"
    assert main(["train", "s2t", "--config", "tiny", f"data.speech={speech}",
                 f"backbone_from={missing}"]) == 2
    assert "run `l3se train codec-2` first" in capsys.readouterr().err
    assert main(["train", "s2t", "--config", "tiny", "data.mix.segment_seconds=2.0"]) == 2
    assert "segment_seconds" in capsys.readouterr().err


def test_reads_the_front_end_of_the_codec_it_copies(corpus, tmp_path):
    """The front end has no weights: an s2t whose config says `conv` still hears what a mel
    codec's backbone hears once it copies that backbone."""
    from l3se.models.ssl import SSLConfig
    from recipes.stages import resolve_config
    from recipes.train_s2t import build_task

    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config(ssl=SSLConfig(pretrained=None, arch="tiny",
                                                     frontend="mel")))
    codec.save_pretrained(tmp_path / "codec")
    cfg = load_config(S2TRecipeConfig, resolve_config("s2t", "tiny"),
                      common_args(corpus, tmp_path / "codec")
                      + [f"train.output_dir={tmp_path / 'run'}", "model.ssl.frontend=conv"])
    s2t = build_task("s2t", cfg).model
    wav = torch.randn(1, 6400)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(s2t.ssl(wav), codec.ssl(wav)))
    assert s2t.ssl.cfg.frontend == "mel"
