import pytest
import torch

from l3se.models.ssl import WAVLM_TINY, LayerMixture, SSLConfig, WavLMBackbone


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
