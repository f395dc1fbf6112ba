import dataclasses
import math

import numpy as np
import pytest
import torch
import yaml
from torch.nn.utils.rnn import pad_sequence

from l3se.models.codec import WavCodec
from l3se.models.heads import SemanticHeadConfig
from l3se.models.llm import QWEN3_TINY, LLMConfig
from l3se.models.s2t import WavS2T, WavS2TConfig
from l3se.models.ssl import WAVLM_TINY, SSLConfig
from l3se.models.tokenizer import EOS, build_tokenizer, load_tokenizer
from tests.conftest import speech_like
from tests.models.tiny import tiny_codec_config

TEXTS = ["hello world", "good morning to you", "seven"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer([t.upper() for t in TEXTS] * 3 + ["the quick brown fox"], out, vocab_size=300)
    return out


def tiny_config(tokenizer_dir, objective="ntp") -> WavS2TConfig:
    return WavS2TConfig(
        ssl=SSLConfig(pretrained=None, arch="tiny"),
        encoder=SemanticHeadConfig(dim=64, ff_dim=128, num_heads=4, num_layers=2, dropout=0.0),
        objective=objective,
        # Qwen3's 0.02 init caps a 128-wide tied head's logits near +-2.6: the random stand-in
        # for a pretrained LLM could not get confident about any token.
        llm=LLMConfig(pretrained=None, arch={**QWEN3_TINY, "initializer_range": 0.1}),
        tokenizer=str(tokenizer_dir),
        max_text_tokens=16,
    )


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    wavs = [torch.from_numpy(speech_like(rng, s)) for s in (0.6, 0.9, 0.45)]
    return pad_sequence(wavs, batch_first=True), torch.tensor([len(w) for w in wavs])


def train(model, wav, lengths, texts, steps, lr=3e-3):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(wav, lengths, texts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def trained(tokenizer_dir, batch):
    torch.manual_seed(0)
    model = WavS2T(tiny_config(tokenizer_dir))
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    losses = train(model, *batch, TEXTS, steps=80)
    return model, llm_before, losses


def test_tokenizer_round_trip_through_auto_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert tok.eos_token == EOS and tok.pad_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    ids = tok("Good Morning, Fox!", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "good morning, fox!"
    # Text never seen in training still encodes: the byte alphabet covers it.
    assert tok.decode(tok("zebra 42")["input_ids"]) == "zebra 42"
    # Trained words are single tokens, unseen ones are not.
    assert len(tok("hello", add_special_tokens=False)["input_ids"]) == 1
    assert len(load_tokenizer(tokenizer_dir)) == len(tok)


def test_ntp_overfits_and_greedy_decode_reproduces_transcripts(trained, batch):
    model, _, losses = trained
    print("ntp loss", losses[0], "->", losses[-1])
    assert losses[-1] < 0.25 * losses[0]
    model.eval()
    assert model.transcribe(*batch) == TEXTS


def test_batched_transcribe_matches_per_item(trained, batch):
    model, _, _ = trained
    model.eval()
    wav, lengths = batch
    batched = model.transcribe(wav, lengths, max_tokens=6)
    single = [model.transcribe(wav[i : i + 1, : lengths[i]], max_tokens=6)[0] for i in range(3)]
    assert batched == single
    # Each item's tokens stop at max_tokens.
    assert all(len(model.tokenize([t])[0]) <= 6 for t in batched)


def test_llm_is_frozen_and_stays_in_eval(trained):
    model, llm_before, _ = trained
    model.train()
    assert model.training and model.encoder.training
    assert not model.llm.training and not model.ssl.training
    assert not any(p.requires_grad for p in model.llm.parameters())
    for k, v in model.llm.state_dict().items():
        assert torch.equal(v, llm_before[k]), k


def test_bf16_checkpoints_load_in_fp32(tokenizer_dir, batch, tmp_path):
    """Qwen/Qwen3-0.6B is stored in bf16: a frozen bf16 LLM behind an fp32 encoder would not even
    run at ``precision: fp32`` on the CPU."""
    from transformers import Qwen3ForCausalLM, WavLMModel

    from l3se.models.llm import build_qwen3_config
    from l3se.models.ssl import build_wavlm_config

    torch.manual_seed(0)
    text = Qwen3ForCausalLM(build_qwen3_config("tiny", vocab_size=300))
    text.to(torch.bfloat16).save_pretrained(tmp_path / "qwen")
    WavLMModel(build_wavlm_config("tiny")).to(torch.bfloat16).save_pretrained(tmp_path / "wavlm")
    cfg = dataclasses.replace(
        tiny_config(tokenizer_dir),
        ssl=SSLConfig(pretrained=str(tmp_path / "wavlm")),
        llm=LLMConfig(pretrained=str(tmp_path / "qwen")),
    )
    model = WavS2T(cfg)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.isfinite(model(*batch, TEXTS))


def test_ctc_variant_trains(tokenizer_dir, batch):
    torch.manual_seed(0)
    model = WavS2T(tiny_config(tokenizer_dir, "ctc"))
    assert not hasattr(model, "llm")
    assert model.ctc_head.out_features == len(load_tokenizer(tokenizer_dir)) + 1
    losses = train(model, *batch, TEXTS, steps=250)
    print("ctc loss", losses[0], "->", losses[-1])
    assert losses[-1] < 0.1 * losses[0]
    model.eval()
    wav, lengths = batch
    hyps = model.transcribe(wav, lengths)
    assert any(hyps) and hyps == [model.transcribe(wav[i : i + 1, : lengths[i]])[0] for i in range(3)]


@pytest.mark.parametrize("samples", [1000, 1280, 3000])
def test_encode_frames_line_up_with_codec_frames(tokenizer_dir, samples):
    torch.manual_seed(0)
    model = WavS2T(tiny_config(tokenizer_dir)).eval()
    lengths = torch.tensor([samples, samples // 2])
    semantic, mask = model.encode(torch.randn(2, samples), lengths)
    t50 = 4 * math.ceil(samples / 1280)
    assert semantic.shape == (2, t50, 64)
    assert mask.shape == (2, t50)
    valid = (~mask).sum(-1).tolist()
    assert valid == [math.ceil(samples / 320), math.ceil(samples // 2 / 320)]


def test_save_and_from_pretrained_round_trip(trained, batch, tmp_path):
    model, _, _ = trained
    model.eval()
    model.save_pretrained(tmp_path / "s2t")
    saved = yaml.safe_load((tmp_path / "s2t" / "config.yaml").read_text())
    assert saved["ssl"]["pretrained"] is None and isinstance(saved["ssl"]["arch"], dict)
    assert saved["llm"]["pretrained"] is None and isinstance(saved["llm"]["arch"], dict)
    assert saved["vocab_size"] == model.vocab_size
    # A moved folder still loads: the tokenizer is read from the folder itself.
    moved = tmp_path / "moved"
    (tmp_path / "s2t").rename(moved)
    loaded = WavS2T.from_pretrained(moved)
    assert not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with torch.no_grad():
        assert torch.equal(model.encode(*batch)[0], loaded.encode(*batch)[0])
        assert torch.equal(model(*batch, TEXTS), loaded(*batch, TEXTS))
    assert loaded.transcribe(*batch) == model.transcribe(*batch)
    with pytest.raises(FileNotFoundError, match="not a saved WavS2T"):
        WavS2T.from_pretrained(tmp_path)


def test_backbone_is_shared_with_the_codec(tokenizer_dir, tmp_path):
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config())
    codec.save_pretrained(tmp_path / "codec")
    for source in (codec, tmp_path / "codec"):
        torch.manual_seed(1)
        model = WavS2T(tiny_config(tokenizer_dir))
        assert not torch.equal(model.ssl.model.encoder.layers[0].feed_forward.output_dense.weight,
                               codec.ssl.model.encoder.layers[0].feed_forward.output_dense.weight)
        model.load_backbone_from(source)
        for (k, a), (_, b) in zip(model.ssl.state_dict().items(), codec.ssl.state_dict().items()):
            assert torch.equal(a, b), k
    other = dataclasses.replace(
        tiny_config(tokenizer_dir), ssl=SSLConfig(pretrained=None, arch={**WAVLM_TINY, "hidden_size": 32})
    )
    with pytest.raises(ValueError, match="does not fit"):
        WavS2T(other).load_backbone_from(codec)


def test_foreign_tokenizer_is_rejected(tokenizer_dir):
    # A model built for 258 classes (bytes + specials) meets a tokenizer with merges above them.
    model = WavS2T(dataclasses.replace(tiny_config(tokenizer_dir), vocab_size=258))
    assert model.vocab_size == 258
    with pytest.raises(ValueError, match="not the tokenizer"):
        model.tokenize(["hello world"])


def encoder_params(h: int, d: int, ff: int, layers: int) -> int:
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 4 * d
    return (h * d + d) + layers * per_layer + 2 * d


def test_paper_config_builds_on_meta_without_download():
    cfg = WavS2TConfig(
        ssl=SSLConfig(pretrained=None, arch="large"),
        llm=LLMConfig(pretrained=None, arch="0.6b"),
        vocab_size=151936,
    )
    with torch.device("meta"):
        model = WavS2T(cfg)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    print("paper WavS2T parameters:", counts)
    assert counts["encoder"] == encoder_params(1024, 1024, 4096, 6) == 76_628_992
    assert counts["llm"] == 596_049_920
    assert counts["proj"] == 1024 * 1024 + 1024
    assert counts["mixture"] == 25
    assert counts["ssl"] == 315_453_120
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == counts["encoder"] + counts["proj"] + counts["mixture"]

    ctc = dataclasses.replace(cfg, objective="ctc", vocab_size=151669)
    with torch.device("meta"):
        model = WavS2T(ctc)
    assert sum(p.numel() for p in model.ctc_head.parameters()) == 1025 * 151670
