import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l3se.models import llm_codec
from l3se.models.codec import WavCodec
from l3se.models.codec_objectives import CodecStep
from l3se.models.llm import QWEN3_TINY, LLMConfig
from l3se.models.llm_codec import (
    IGNORE,
    LLMCodecConfig,
    LLMCodecObjective,
    MedusaHead,
    TextBank,
    future_targets,
    future_token_loss,
    gumbel_tau,
    inverse_distance_weights,
    ramp,
    sample_like,
)
from l3se.models.tokenizer import build_tokenizer
from l3se.models.tokens import TokenLayout
from tests.models.tiny import tiny_codec_config

TEXTS = ["the cat sat on the mat", "a quick brown fox jumps", "hello world again and again"]
# Full FTP and SA weights from this step on.
LATE = 100


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    tok = build_tokenizer(TEXTS * 3, folder, vocab_size=300)
    return LLMCodecConfig(
        llm=LLMConfig(pretrained=None, arch={**QWEN3_TINY, "vocab_size": len(tok)}),
        tokenizer=str(folder), tau_steps=50, ftp_heads=2, ftp_start=10,
        ftp_ramp=10, sa_start=20, sa_ramp=10, bank_size=4,
    )


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return WavCodec(tiny_codec_config()).eval()


def make_objective(cfg, codec, **overrides):
    torch.manual_seed(1)
    c = codec.cfg
    return LLMCodecObjective(
        dataclasses.replace(cfg, **overrides), c.dim, c.n_codebooks, c.codebook_size,
        codec.frame_length,
    )


def codec_step(codec, step, texts=(TEXTS[0], None)):
    torch.manual_seed(2)
    wav = 0.1 * torch.randn(2, 6400)
    lengths = torch.tensor([6400, 3000])
    out = codec(wav, lengths)
    return CodecStep(
        clean=wav, recon=out.audio, lengths=lengths, codes=out.codes, quantized=out.quantized,
        texts=list(texts), words=[None, None], step=step,
    )


def test_schedules():
    assert gumbel_tau(0, 1.0, 0.3, 20000) == pytest.approx(1.0)
    assert gumbel_tau(10000, 1.0, 0.3, 20000) == pytest.approx(0.65)
    assert gumbel_tau(20000, 1.0, 0.3, 20000) == pytest.approx(0.3)
    assert gumbel_tau(50000, 1.0, 0.3, 20000) == pytest.approx(0.3)
    assert [ramp(s, 10, 4) for s in (0, 9, 10, 12, 14, 99)] == [0, 0, 0, 0.5, 1, 1]
    assert ramp(10, 10, 0) == 1 and ramp(9, 10, 0) == 0
    assert inverse_distance_weights(3).tolist() == pytest.approx([6 / 11, 3 / 11, 2 / 11])


def test_stage_weights(tiny_cfg, codec):
    objective = make_objective(tiny_cfg, codec)
    assert objective.weights(0) == objective.weights(9) == (0, 0, 0)
    assert objective.weights(15) == pytest.approx((0.2 * 0.5, 0, 0))
    assert objective.weights(LATE) == pytest.approx((0.2, 0.1, 0.05))
    assert make_objective(tiny_cfg, codec, ftp_heads=0).weights(LATE)[0] == 0


def test_future_targets_off_by_one():
    ids = torch.arange(10)[None]
    assert future_targets(ids, 0).tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, IGNORE]]
    assert future_targets(ids, 1).tolist() == [[2, 3, 4, 5, 6, 7, 8, 9, IGNORE, IGNORE]]
    assert (future_targets(ids[:, :2], 3) == IGNORE).all()


def test_future_token_loss_scores_the_right_future_token():
    """Hidden states that point at the token ``offset`` places ahead, in its own codebook: the
    head meant for that offset finds it, the other does not."""
    torch.manual_seed(0)
    q, k, h, frames = 4, 16, 64, 6
    rows = F.normalize(torch.randn(q, k, h), dim=-1)
    heads = nn.ModuleList(MedusaHead(rows) for _ in range(2))
    codes = torch.randint(k, (2, q, frames))
    ids = codes.transpose(1, 2).reshape(2, -1)  # frame-major
    ids[1, -5:] = IGNORE  # padding
    n = ids.shape[1]

    def pointing(offset):
        hidden = torch.zeros(2, n, h)
        for b in range(2):
            for p in range(n - offset):
                target = int(ids[b, p + offset])
                if target != IGNORE:
                    hidden[b, p] = 30 * rows[(p + offset) % q, target]
        return hidden

    next_token, skip_one = future_token_loss(pointing(1), ids, heads, q)
    assert next_token < 1e-3 < 1 < skip_one
    next_token, skip_one = future_token_loss(pointing(2), ids, heads, q)
    assert skip_one < 1e-3 < 1 < next_token


def test_bank_is_fifo():
    bank = TextBank(n_layers=2, size=5, dim=3)
    assert bank.vectors().shape == (2, 0, 3)
    for i in range(5 + 3):
        bank.push(torch.full((2, 1, 3), float(i)))
    assert bank.vectors()[0, :, 0].tolist() == [3, 4, 5, 6, 7]
    bank.push(torch.arange(7.0)[None, :, None].expand(2, 7, 3))
    assert bank.vectors()[1, :, 0].tolist() == [2, 3, 4, 5, 6]
    assert bank.store.shape == (2, 5, 3)  # fixed shape: a checkpoint restores it in place


def test_sample_like_matches_mean_and_covariance():
    torch.manual_seed(0)
    mix = torch.randn(8, 8)
    rows = torch.randn(4000, 8) @ mix + torch.linspace(-1, 1, 8)
    draws = sample_like(rows, 20000)
    assert torch.allclose(draws.mean(0), rows.mean(0), atol=0.1)
    assert torch.allclose(draws.T.cov(), rows.T.cov(), atol=0.1 * rows.T.cov().abs().max())


def test_audio_embeddings_follow_the_text_embeddings(tiny_cfg, codec, monkeypatch):
    """Text rows with an offset mean and an anisotropic covariance, and padded rows (untrained in
    Qwen3) of another scale: the audio rows must have the text rows' mean and their variance
    along each of the text rows' principal axes. ``randn * initializer_range`` has neither."""
    n_text = tiny_cfg.llm.arch["vocab_size"]
    dim = QWEN3_TINY["hidden_size"]
    g = torch.Generator().manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    scales = torch.logspace(-1, 0.5, dim)
    text = torch.randn(n_text, dim, generator=g) * scales @ rotation.T + 1.0
    padded = 0.02 * torch.randn(100, dim, generator=g)
    real_build = llm_codec.build_qwen3

    def with_rows(cfg):
        llm = real_build(dataclasses.replace(cfg, arch={**cfg.arch, "vocab_size": n_text + 100}))
        with torch.no_grad():
            llm.get_input_embeddings().weight.copy_(torch.cat([text, padded]))
        return llm

    monkeypatch.setattr(llm_codec, "build_qwen3", with_rows)
    objective = make_objective(tiny_cfg, codec)
    audio = objective.audio_embeddings()
    assert audio.shape == (8, 64, dim)
    flat = audio.detach().reshape(-1, dim)
    # In the text rows' principal axes, scaled to unit variance: 512 draws give each axis's mean
    # to about 0.04 and its variance to about 6%.
    eigval, eigvec = torch.linalg.eigh(text.T.cov())
    whitened = (flat - text.mean(0)) @ eigvec / eigval.sqrt()
    assert whitened.mean(0).abs().max() < 0.3
    assert ((whitened.var(0) - 1).abs() < 0.35).all(), whitened.var(0)
    # Tied Qwen3: every head starts as the LLM's own output head over the audio rows.
    for head in objective.heads:
        assert torch.equal(head.rows, audio)
        assert head.rows.data_ptr() != audio.data_ptr()
        hidden = torch.randn(1, 3, audio.shape[-1])
        assert torch.equal(head(hidden), hidden)


def test_bridge_embeddings_are_frame_major(tiny_cfg, codec):
    objective = make_objective(tiny_cfg, codec)
    codes = torch.randint(64, (2, 8, 3))
    y = F.one_hot(codes.transpose(1, 2), 64).float()
    layout = TokenLayout(8, 64)
    expected = objective.audio_embeddings().reshape(8 * 64, -1)[layout.flatten(codes) - 2]
    assert torch.equal(objective.embed(y), expected)


def test_the_bridge_alone_before_ftp_and_sa_reaches_the_encoder(tiny_cfg, codec):
    objective = make_objective(tiny_cfg, codec)
    codec.zero_grad()
    out = objective(codec_step(codec, step=0))
    assert set(out.logs) == {"bridge_ce", "bridge_accuracy", "tau"}
    assert out.logs["tau"] == pytest.approx(1.0)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in codec.encoder.parameters())
    assert objective.audio_embed.grad is None


def test_llm_losses_train_the_codec_and_never_the_llm(tiny_cfg, codec):
    # No bridge CE: whatever reaches the encoder came through the Gumbel sample and the LLM.
    objective = make_objective(tiny_cfg, codec, bridge_weight=0.0).train()
    assert not objective.llm.training
    assert not any(p.requires_grad for p in objective.llm.parameters())
    before = {k: v.clone() for k, v in objective.llm.state_dict().items()}
    # Every parameter, the LLM's included: a frozen one must get no gradient to step on.
    opt = torch.optim.AdamW([*objective.parameters(), *codec.encoder.parameters()], lr=1e-2,
                            weight_decay=0.1)
    codec.zero_grad()
    out = objective(codec_step(codec, step=LATE))
    assert {"ftp", "ftp_offset1", "ftp_offset2", "sa_cos", "sa_contrastive"} <= set(out.logs)
    assert all(torch.isfinite(v) for v in out.logs.values())
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in codec.encoder.parameters())
    for p in [objective.audio_embed, *objective.heads.parameters(), *objective.bridge.parameters()]:
        assert p.grad is not None
    assert all(p.grad is None for p in objective.llm.parameters())
    opt.step()
    after = objective.llm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not objective.llm.training


def test_bank_grows_in_training_only(tiny_cfg, codec):
    objective = make_objective(tiny_cfg, codec).train()
    with torch.no_grad():
        first = objective(codec_step(codec, LATE, texts=(TEXTS[0], TEXTS[1])))
        assert int(objective.bank.filled) == 2
        # An empty bank leaves the positive as the only class: nothing to contrast yet.
        assert first.logs["sa_contrastive"] == 0
        second = objective(codec_step(codec, LATE, texts=(TEXTS[2], None)))
        assert int(objective.bank.filled) == 3
        assert second.logs["sa_contrastive"] > 0
        objective.eval()
        objective(codec_step(codec, LATE, texts=(TEXTS[0], TEXTS[1])))
        assert int(objective.bank.filled) == 3
        # No transcript at all: no SA term (logged with a count of 0), the rest still runs.
        out = objective(codec_step(codec, LATE, texts=(None, " ")))
    assert out.counts["sa_cos"] == 0 and "ftp" in out.logs
