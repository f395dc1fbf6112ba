import dataclasses

import pytest
import torch

from l3se.models.codec import WavCodec
from l3se.models.heads import AcousticHeadConfig, SemanticHeadConfig
from l3se.models.ni_encoder import NIEncoder, NIEncoderConfig
from l3se.models.s2t import WavS2T, WavS2TConfig
from l3se.models.ssl import WAVLM_TINY, SSLConfig
from l3se.models.tokenizer import build_tokenizer
from tests.models.tiny import tiny_codec_config

TINY_SEMANTIC = SemanticHeadConfig(dim=48, ff_dim=64, num_heads=4, num_layers=1, dropout=0.0)


def tiny_teachers(tmp_path, codec_dim: int = 32, semantic_dim: int = 48):
    """A tiny WavCodec and a tiny CTC WavS2T sharing one random WavLM, as codec-2 and s2t
    would leave them."""
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config(dim=codec_dim)).eval()
    tokenizer = build_tokenizer(["hello world number one two three"], tmp_path / "tok", 300)
    cfg = WavS2TConfig(
        ssl=SSLConfig(pretrained=None, arch="tiny"),
        encoder=dataclasses.replace(TINY_SEMANTIC, dim=semantic_dim),
        objective="ctc",
        tokenizer=str(tmp_path / "tok"),
    )
    s2t = WavS2T(cfg, tokenizer=tokenizer)
    s2t.load_backbone_from(codec)
    # Non-uniform mixtures, so that a copy is told apart from a fresh init.
    with torch.no_grad():
        codec.mixture.logits.copy_(torch.linspace(1.0, -1.0, 3))
        s2t.mixture.logits.copy_(torch.linspace(-1.0, 1.0, 3))
    return codec, s2t.eval()


def tiny_config(semantic: bool = True) -> NIEncoderConfig:
    return NIEncoderConfig(
        ssl=SSLConfig(pretrained=None, arch="tiny", frozen=False),
        acoustic=AcousticHeadConfig(dim=32, intermediate_dim=64, num_layers=1),
        semantic=TINY_SEMANTIC if semantic else None,
    )


def test_output_shapes_and_frame_rates():
    torch.manual_seed(0)
    model = NIEncoder(tiny_config()).eval()
    wav = torch.randn(2, 3000) * 0.1
    lengths = torch.tensor([3000, 1000])
    out = model(wav, lengths)
    t12 = -(-3000 // 1280)
    assert model.frame_length == 1280
    assert out.acoustic.shape == (2, t12, model.acoustic_dim) == (2, 3, 32)
    assert out.semantic.shape == (2, 4 * t12, model.semantic_dim) == (2, 12, 48)
    assert out.frame_lengths.tolist() == [3, 1]
    # Padding the input to whole frames changes nothing for the valid part.
    padded = model(torch.nn.functional.pad(wav, (0, 3840 - 3000)), lengths)
    torch.testing.assert_close(padded.acoustic, out.acoustic)
    torch.testing.assert_close(padded.semantic, out.semantic)


def test_acoustic_only_encoder():
    model = NIEncoder(tiny_config(semantic=False)).eval()
    out = model(torch.randn(1, 2560) * 0.1)
    assert out.semantic is None and model.semantic_dim is None and model.semantic is None
    assert out.acoustic.shape == (1, 2, 32)
    assert list(model.mixture_weights()) == ["acoustic"]


def test_layerdrop_never_loses_a_hidden_state():
    # transformers records only the layers that ran; the mixtures need all of them.
    cfg = tiny_config()
    cfg.ssl.arch = {**WAVLM_TINY, "layerdrop": 1.0}
    model = NIEncoder(cfg).train()
    out = model(torch.randn(1, 5120) * 0.1)
    assert out.semantic.shape == (1, 16, 48)


def test_spec_augment_masks_only_when_asked(tmp_path):
    # Without dropout, WavLM's training mode differs from its eval mode by the time masking
    # alone; half the frames of a 16-frame input are masked when it is on.
    no_dropout = {k: 0.0 for k in ("hidden_dropout", "attention_dropout", "activation_dropout",
                                   "feat_proj_dropout")}
    arch = {**WAVLM_TINY, **no_dropout, "mask_time_prob": 0.5, "mask_time_length": 2}
    wav = torch.randn(2, 5120) * 0.1
    same = {}
    for on in (False, True):
        cfg = dataclasses.replace(tiny_config(), spec_augment=on)
        cfg.ssl.arch = arch
        model = NIEncoder(cfg)
        with torch.no_grad():
            states = model.eval().hidden_states(wav), model.train().hidden_states(wav)
        same[on] = all(torch.equal(a, b) for a, b in zip(*states))
    assert same == {False: True, True: False}
    # A student copied from the teachers keeps it off, and turning it on still copies them.
    codec, s2t = tiny_teachers(tmp_path)
    assert not NIEncoder.from_teachers(codec, s2t).ssl.model.config.apply_spec_augment
    cfg = dataclasses.replace(NIEncoder.from_teachers(codec, s2t).cfg, spec_augment=True)
    assert NIEncoder.from_teachers(codec, s2t, cfg=cfg).ssl.model.config.apply_spec_augment


def test_from_teachers_reproduces_the_teachers(tmp_path):
    codec, s2t = tiny_teachers(tmp_path)
    student = NIEncoder.from_teachers(codec, s2t).eval()
    assert student.cfg.ssl.frozen is False and student.cfg.ssl.pretrained is None
    assert all(p.requires_grad for p in student.parameters())
    torch.manual_seed(1)
    clean = torch.randn(2, 4000) * 0.1
    lengths = torch.tensor([4000, 2500])
    with torch.no_grad():
        out = student(clean, lengths)
        torch.testing.assert_close(out.acoustic, codec.encode_latent(clean, lengths))
        torch.testing.assert_close(out.semantic, s2t.encode(clean, lengths)[0])
    torch.testing.assert_close(student.acoustic_mixture.weights, codec.mixture.weights)
    torch.testing.assert_close(student.semantic_mixture.weights, s2t.mixture.weights)
    # A copy, not a share: training the student must leave the teachers alone.
    assert student.ssl.model.feature_projection.projection.weight.data_ptr() != (
        codec.ssl.model.feature_projection.projection.weight.data_ptr()
    )

    acoustic_only = NIEncoder.from_teachers(codec, None, semantic=False)
    assert acoustic_only.semantic is None
    with pytest.raises(ValueError, match="WavS2T teacher"):
        NIEncoder.from_teachers(codec, None, semantic=True)


def test_from_teachers_rejects_different_backbones(tmp_path):
    codec, s2t = tiny_teachers(tmp_path)
    with torch.no_grad():
        s2t.ssl.model.encoder.layers[0].attention.k_proj.weight.add_(0.01)
    with pytest.raises(ValueError, match="different WavLM backbones.*different weights"):
        NIEncoder.from_teachers(codec, s2t)


def test_from_teachers_with_own_head_sizes(tmp_path):
    codec, s2t = tiny_teachers(tmp_path)
    cfg = NIEncoderConfig(
        ssl=SSLConfig(pretrained=None, arch=codec.ssl.arch(), frozen=False),
        acoustic=AcousticHeadConfig(dim=64, intermediate_dim=64, num_layers=1),
        semantic=s2t.cfg.encoder,
    )
    student = NIEncoder.from_teachers(codec, s2t, cfg=cfg)
    # The backbone always comes from the teachers; a resized head starts fresh.
    for name, t in codec.ssl.model.state_dict().items():
        assert torch.equal(student.ssl.model.state_dict()[name], t), name
    assert student.acoustic_dim == 64
    assert torch.equal(student.semantic.proj.weight, s2t.encoder.proj.weight)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = NIEncoder(tiny_config()).eval()
    with torch.no_grad():
        model.semantic_mixture.logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    model.save_pretrained(tmp_path / "ni")
    loaded = NIEncoder.from_pretrained(tmp_path / "ni").eval()
    assert isinstance(loaded.cfg.ssl.arch, dict) and loaded.cfg.ssl.pretrained is None
    assert loaded.cfg.semantic == model.cfg.semantic
    wav = torch.randn(1, 2000) * 0.1
    with torch.no_grad():
        a, b = model(wav), loaded(wav)
    torch.testing.assert_close(a.acoustic, b.acoustic)
    torch.testing.assert_close(a.semantic, b.semantic)
    with pytest.raises(FileNotFoundError, match="not a saved NIEncoder"):
        NIEncoder.from_pretrained(tmp_path)


def _semantic_head_params(h: int, d: int, ff: int, layers: int) -> int:
    attention = 3 * d * d + 3 * d + d * d + d
    feed_forward = d * ff + ff + ff * d + d
    layer = attention + feed_forward + 2 * 2 * d
    return h * d + d + layers * layer + 2 * d


def test_paper_config_parameter_counts():
    cfg = NIEncoderConfig(ssl=SSLConfig(pretrained=None, arch="large", frozen=False))
    with torch.device("meta"):
        model = NIEncoder(cfg)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    print("paper NI-Encoder parameters:", counts, "total", sum(counts.values()))
    assert counts == {
        "ssl": 315_453_120,  # WavLM-Large
        "acoustic_mixture": 25,
        "acoustic": 40_987_648,  # = WavCodec's encoder
        "semantic_mixture": 25,
        "semantic": _semantic_head_params(1024, 1024, 4096, 6),
    }
    # Everything is fine-tuned, the backbone included (paper section 4.4).
    assert all(p.requires_grad for p in model.parameters())
    assert model.ssl.num_hidden_states == 25 and model.frame_length == 1280
