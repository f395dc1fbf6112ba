import math

import pytest
import torch

from l3se.models.codec import WavCodec, WavCodecConfig
from l3se.models.ssl import SSLConfig
from tests.models.tiny import tiny_codec_config


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return WavCodec(tiny_codec_config()).eval()


@pytest.mark.parametrize("samples", [1280, 4000, 16000, 16001])
def test_frame_rates_and_lengths(codec, samples):
    wav = torch.randn(2, samples)
    t12 = math.ceil(samples / 1280)
    with torch.no_grad():
        out = codec(wav, torch.tensor([samples, samples // 2]))
        codes = codec.encode(wav)
        latent = codec.encode_latent(wav)
        decoded = codec.decode(codes, length=samples)
    assert codec.frame_length == 1280
    assert out.audio.shape == wav.shape
    assert out.codes.shape == codes.shape == (2, 8, t12)
    assert out.latent.shape == latent.shape == (2, t12, 32)
    assert decoded.shape == wav.shape
    assert codec.decode(codes).shape == (2, t12 * 1280)
    assert codes.dtype == torch.long and int(codes.max()) < 64


def test_codes_match_forward_and_decode_matches_forward(codec):
    wav = torch.randn(1, 6400)
    with torch.no_grad():
        out = codec(wav)
        assert torch.equal(out.codes, codec.encode(wav))
        assert torch.allclose(codec.decode(out.codes, 6400), out.audio, atol=1e-5)


def test_save_pretrained_round_trip(codec, tmp_path):
    codec.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.yaml", "model.safetensors"]
    loaded = WavCodec.from_pretrained(tmp_path / "m").eval()
    for (k, a), (_, b) in zip(codec.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    wav = torch.randn(1, 3000)
    with torch.no_grad():
        assert torch.equal(codec(wav).audio, loaded(wav).audio)
    with pytest.raises(FileNotFoundError, match="not a saved WavCodec"):
        WavCodec.from_pretrained(tmp_path)


def _vocos_backbone(inp, d, i, layers):
    block = (7 * d + d) + 2 * d + (d * i + i) + (i * d + d) + d
    return inp * d * 7 + d + 2 * d + layers * block + 2 * d


def _expected_counts(d=1024, i=2048, h=1024, q=8, k=1024, cd=8, n_fft=1280):
    """Parameter counts of the paper-scale model, worked out from the architecture."""
    conv = [(1, 10)] + [(512, 3)] * 4 + [(512, 2)] * 2
    wavlm = sum(cin * 512 * kk + 2 * 512 for cin, kk in conv)  # conv + LayerNorm, no bias
    wavlm += 2 * 512 + 512 * h + h  # feature projection
    wavlm += h  # masked_spec_embed
    wavlm += h * (h // 16) * 128 + 128 + h  # weight-normed positional conv (g over kernel)
    wavlm += 2 * h  # encoder LayerNorm
    layer = 4 * (h * h + h) + (64 * 8 + 8) + 16 + 2 * 2 * h + (h * 4 * h + 4 * h) + (4 * h * h + h)
    wavlm += 24 * layer + 320 * 16  # + relative position embedding (first layer)
    resample = 2 * (d * d * 4 + d)
    encoder = _vocos_backbone(h, d, i, 6) + resample
    quantizer = q * ((cd * d + cd + cd) + (d * cd + d + d) + k * cd)
    resnet = 2 * 2 * d + 2 * (d * d * 3 + d)
    attention = 2 * d + (d * 3 * d + 3 * d) + (d * d + d)
    decoder = resample + 4 * resnet + attention + 2 * d
    decoder += _vocos_backbone(d, d, i, 12) + d * (n_fft + 2) + n_fft + 2
    return {"ssl": wavlm, "mixture": 25, "encoder": encoder, "quantizer": quantizer,
            "decoder": decoder}


def test_paper_config_builds_without_download():
    cfg = WavCodecConfig(ssl=SSLConfig(pretrained=None, arch="large"))
    with torch.device("meta"):
        model = WavCodec(cfg)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    expected = _expected_counts()
    print("paper WavCodec parameters:", counts, "total", sum(counts.values()))
    assert counts == expected
    assert counts["ssl"] == 315_453_120  # WavLM-Large
    assert model.ssl.num_hidden_states == 25
    assert model.frame_length == 1280
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(expected.values()) - expected["ssl"]


def test_dead_entries_restart_onto_frames_of_the_batch():
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config()).train()
    wav = torch.randn(2, 6400)
    latent = codec.encode_latent(wav)
    frames_per_call = latent.shape[0] * latent.shape[1]  # 2 x 5 frames
    # Idle for 3 calls' frames is allowed, one frame more is not.
    codec.dead_code_frames = 3 * frames_per_call
    before = [vq.codebook.weight.detach().clone() for vq in codec.quantizer.quantizers]
    for _ in range(3):
        codes = codec.quantize(latent)[1]
    for vq, w in zip(codec.quantizer.quantizers, before):
        assert torch.equal(vq.codebook.weight, w)
    used = [set(codes[:, q].flatten().tolist()) for q in range(codes.shape[1])]
    assert all(len(u) < codec.cfg.codebook_size for u in used)
    codes = codec.quantize(latent)[1]
    projected = codec.quantizer(latent.transpose(1, 2))[2]
    frames = projected.split(codec.quantizer.codebook_dim, dim=1)[0]
    frames = frames.transpose(1, 2).reshape(-1, frames.shape[1])
    w = codec.quantizer.quantizers[0].codebook.weight
    for k in range(codec.cfg.codebook_size):
        if k in used[0]:
            assert torch.equal(w[k], before[0][k])
        else:
            # Moved onto one of this batch's first-stage inputs.
            assert torch.isclose(w[k][None], frames, atol=1e-5).all(-1).any(), k
    assert not codec.idle_frames.any()
    # Not while evaluating, and never saved.
    codec.eval()
    frozen = w.detach().clone()
    codec.quantize(torch.randn_like(latent))
    assert torch.equal(codec.quantizer.quantizers[0].codebook.weight, frozen)
    assert "idle_frames" not in codec.state_dict()


def test_the_restart_window_counts_frames_not_steps():
    # Shorter crops must not restart entries sooner: the window is the same 40 frames whether
    # it takes 5 calls of 2 x 5 frames or 3 calls of 2 x 10.
    for samples, calls in ((6400, 5), (12800, 3)):
        torch.manual_seed(0)
        codec = WavCodec(tiny_codec_config()).train()
        codec.dead_code_frames = 40
        latent = codec.encode_latent(torch.randn(2, samples))
        before = codec.quantizer.quantizers[0].codebook.weight.detach().clone()
        for call in range(1, calls + 1):
            codec.quantize(latent)
            moved = not torch.equal(codec.quantizer.quantizers[0].codebook.weight, before)
            assert moved == (call == calls), (samples, call)


@pytest.mark.parametrize("design", [
    dict(upsampler="interp"),
    dict(upsampler="interp", head_hop=160, n_fft=640),
    dict(head_hop=80, n_fft=320),
    dict(ssl=SSLConfig(pretrained=None, arch="tiny", frontend="mel")),
])
def test_decoder_and_front_end_designs_keep_every_rate(design):
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config(**design)).eval()
    wav = torch.randn(2, 7000)
    with torch.no_grad():
        out = codec(wav, torch.tensor([7000, 3000]))
    assert out.audio.shape == wav.shape and out.codes.shape == (2, 8, 6)
    assert torch.isfinite(out.audio).all()
    head = codec.decoder.head
    assert head.istft.hop_length == design.get("head_hop", 320)


def test_head_hop_must_divide_the_backbone_hop_by_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        WavCodec(tiny_codec_config(head_hop=240))
    with pytest.raises(ValueError, match="unknown upsampler"):
        WavCodec(tiny_codec_config(upsampler="pixelshuffle"))


def test_interp_upsampler_has_no_checkerboard():
    """A constant input must come out of each upsampler as a constant (its edges aside):
    transposed stride-2 kernels give even and odd outputs different sums, the comb every
    output of the transposed decoder shares."""
    from l3se.models.modules import InterpUpsample, Upsample

    torch.manual_seed(0)
    x = torch.ones(1, 8, 32)
    with torch.no_grad():
        transposed = Upsample(8, 2)(x)[..., 8:-8]
        interp = InterpUpsample(8, 2)(x)[..., 8:-8]
    assert float((transposed[..., 0::2] - transposed[..., 1::2]).abs().max()) > 1e-3
    assert float(interp.std(-1).max()) < 1e-5
