import pytest
import torch

from l3se.models.heads import frame_padding_mask
from l3se.models.ssl import (
    WAVLM_TINY,
    LayerMixture,
    SSLConfig,
    WavLMBackbone,
    build_wavlm_config,
)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return WavLMBackbone(SSLConfig(pretrained=None, arch="tiny"))


def test_hidden_states_at_50hz(backbone):
    states = backbone(torch.randn(2, 3200))
    assert len(states) == backbone.num_hidden_states == 3
    assert all(s.shape == (2, 10, 64) for s in states)


def test_frozen_backbone_stays_in_eval(backbone):
    parent = torch.nn.Sequential(backbone)
    parent.train()
    assert not backbone.training and not backbone.model.training
    assert not any(p.requires_grad for p in backbone.parameters())
    x = torch.randn(1, 3200)
    a, b = backbone(x)[-1], backbone(x)[-1]
    assert torch.equal(a, b), "layerdrop/masking must be off"


def test_padding_changes_valid_frames_only_with_a_groupnorm_front_end():
    """WavLM-Large's per-frame LayerNorm front end ignores padding; the tiny preset's GroupNorm
    (WavLM-Base's) normalises each channel over the whole signal, so padding shifts it. The
    enhancer batches only chunks of equal frame count for this reason too."""
    x = torch.randn(1, 3200)
    padded = torch.cat([x, torch.zeros(1, 1280)], -1)
    torch.manual_seed(0)
    layer_norm = {**WAVLM_TINY, "feat_extract_norm": "layer", "conv_bias": False}
    for arch, unchanged in ((layer_norm, True), ("tiny", False)):
        backbone = WavLMBackbone(SSLConfig(pretrained=None, arch=arch))
        full = backbone(x)[-1]
        masked = backbone(padded, torch.tensor([3200]))[-1]
        assert torch.allclose(full[:, :9], masked[:, :9], atol=1e-4) == unchanged, arch


def test_hidden_states_do_not_depend_on_what_transformers_records(backbone):
    """State 0 is the first layer's input, the last one the last layer's output before the
    encoder's final LayerNorm; transformers up to 5.12 reported that LayerNorm's output instead,
    which ``tie_last_hidden_states`` reproduces in 5.24."""
    wavlm = backbone.model
    seen = {}
    hooks = [
        wavlm.encoder.pos_conv_embed.register_forward_hook(
            lambda _, args, out: seen.update(first=args[0] + out)
        ),
        wavlm.register_forward_hook(lambda _, a, out: seen.update(output=out.last_hidden_state)),
    ]
    x = torch.randn(1, 3200)
    try:
        states = backbone(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert wavlm.config.do_stable_layer_norm
    torch.testing.assert_close(states[0], seen["first"])
    torch.testing.assert_close(wavlm.encoder.layer_norm(states[-1]), seen["output"])
    wavlm.config.tie_last_hidden_states = True
    try:
        again = backbone(x)
    finally:
        del wavlm.config.tie_last_hidden_states
    for a, b in zip(again, states):
        torch.testing.assert_close(a, b)


def test_a_partly_filled_last_hop_is_a_valid_frame():
    """WavLM masks the frames the heads mask (``frame_padding_mask``): an item of 3100 samples
    has 10 frames of 320, the last one partly filled, like a 3200-sample item ending in silence."""
    torch.manual_seed(0)
    backbone = WavLMBackbone(SSLConfig(pretrained=None, arch="tiny", normalize_input=False))
    x = torch.randn(1, 3200)
    x[:, 3100:] = 0
    lengths = torch.tensor([3100])
    assert frame_padding_mask(lengths, 10, backbone.hop) is None
    for a, b in zip(backbone(x, lengths), backbone(x)):
        torch.testing.assert_close(a, b)


def test_a_bf16_checkpoint_loads_with_fp32_weights(tmp_path):
    """The distill stage fine-tunes WavLM: its master weights must be fp32 whatever the
    checkpoint stores (microsoft/wavlm-large is fp32, transformers 5 keeps a checkpoint's dtype)."""
    from transformers import WavLMModel

    torch.manual_seed(0)
    WavLMModel(build_wavlm_config("tiny")).to(torch.bfloat16).save_pretrained(tmp_path / "wavlm")
    backbone = WavLMBackbone(SSLConfig(pretrained=str(tmp_path / "wavlm"), frozen=False))
    assert {p.dtype for p in backbone.parameters()} == {torch.float32}
    assert all(s.dtype == torch.float32 for s in backbone(torch.randn(1, 3200)))


def test_layer_mixture_weights_and_gradient():
    mix = LayerMixture(3)
    states = [torch.full((1, 2, 4), float(i)) + torch.randn(1, 2, 4) for i in range(3)]
    out = mix(states)
    assert out.shape == (1, 2, 4)
    assert torch.allclose(mix.weights.sum(), torch.tensor(1.0))
    out.square().sum().backward()
    assert mix.logits.grad is not None and mix.logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="hidden states"):
        mix(states[:2])


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown WavLM preset"):
        WavLMBackbone(SSLConfig(pretrained=None, arch="huge"))


def test_mel_front_end_keeps_frames_and_loudness():
    """The fixed filterbank gives the CNN's frame count and, unlike a per-frame LayerNorm over
    its bands, keeps how loud each frame is: a quieter half of the utterance shows in state 0."""
    from l3se.models.ssl import LogMelFrontEnd

    torch.manual_seed(0)
    mel = WavLMBackbone(SSLConfig(pretrained=None, arch="tiny", frontend="mel"))
    conv = WavLMBackbone(SSLConfig(pretrained=None, arch="tiny"))
    assert isinstance(mel.model.feature_extractor, LogMelFrontEnd)
    assert not any(k.startswith("model.feature_extractor") for k in mel.state_dict())
    wav = torch.randn(1, 32000)
    wav[:, 16000:] *= 0.01
    with torch.no_grad():
        states = mel(wav)
        assert states[0].shape == conv(wav)[0].shape == (1, 100, 64)
        feats = mel.model.feature_extractor(torch.nn.functional.pad(wav, (40, 40)))
    assert float(feats[..., :50].mean() - feats[..., 50:].mean()) > 1.0


def test_mel_front_end_only_for_random_backbones():
    with pytest.raises(ValueError, match="pretrained WavLM keeps its own CNN"):
        WavLMBackbone(SSLConfig(pretrained="microsoft/wavlm-large", frontend="mel"))
    with pytest.raises(ValueError, match="unknown ssl.frontend"):
        WavLMBackbone(SSLConfig(pretrained=None, arch="tiny", frontend="sinc"))


def test_arch_preset_with_changed_fields():
    from l3se.models.ssl import build_wavlm_config

    conf = build_wavlm_config({"preset": "tiny", "conv_dim": [128] * 7})
    assert conf.conv_dim == [128] * 7 and conf.hidden_size == 64
