import pytest
import torch

from l3se.models.codec import WavCodec
from l3se.models.discriminators import Discriminator, DiscriminatorConfig
from l3se.models.losses import (
    CodecLossConfig,
    MultiScaleMelLoss,
    discriminator_loss,
    generator_loss,
)
from l3se.training.codec_task import CodecTask
from l3se.training.metrics import CodebookUsage
from tests.models.tiny import tiny_codec_config


@pytest.fixture(scope="module")
def disc():
    torch.manual_seed(0)
    return Discriminator(DiscriminatorConfig(periods=[3], fft_sizes=[256]))


def test_dac_defaults():
    cfg = CodecLossConfig()
    assert (cfg.mel, cfg.feature_matching, cfg.adversarial) == (15.0, 2.0, 1.0)
    assert (cfg.commitment, cfg.codebook) == (0.25, 1.0)
    assert cfg.mel_n_mels == [5, 10, 20, 40, 80, 160, 320]
    assert cfg.mel_windows == [32, 64, 128, 256, 512, 1024, 2048]
    paper = DiscriminatorConfig()
    assert paper.periods == [2, 3, 5, 7, 11] and paper.fft_sizes == [2048, 1024, 512]
    assert len(paper.bands) == 5


def test_mel_loss_is_zero_on_identical_and_differentiable():
    cfg = CodecLossConfig()
    loss = MultiScaleMelLoss(cfg.mel_n_mels, cfg.mel_windows)
    x = torch.randn(2, 4000)
    assert float(loss(x, x)) == 0.0
    y = (0.5 * x).requires_grad_()
    value = loss(y, x)
    value.backward()
    assert value > 0 and y.grad.abs().sum() > 0


def test_discriminator_and_lsgan_losses(disc):
    fake = torch.randn(2, 1280, requires_grad=True)
    real = torch.randn(2, 1280)
    fmaps = disc(real)
    assert len(fmaps) == 2  # one period + one STFT size
    assert len(fmaps[1]) == 5 * 5 + 1  # 5 bands x 5 layers + the shared output conv
    d = discriminator_loss(disc, fake, real)
    adv, fm = generator_loss(disc, fake, real)
    assert all(torch.isfinite(v) and v > 0 for v in (d, adv, fm))
    adv.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_codec2_step_gives_finite_losses(disc):
    torch.manual_seed(0)
    task = CodecTask(WavCodec(tiny_codec_config()), discriminator=disc)
    wav = torch.randn(2, 1280) * 0.1
    batch = {"clean": wav, "lengths": torch.tensor([1280, 1000])}
    g = task.training_step(batch, 0)
    g.loss.backward()
    d = task.discriminator_step(g.cache, 0)
    d.loss.backward()
    for key in ("mel", "adversarial", "feature_matching", "commitment", "codebook"):
        assert torch.isfinite(g.logs[key]), key
    assert torch.isfinite(g.loss) and torch.isfinite(d.loss)
    assert all(p.grad is not None for p in disc.parameters() if p.requires_grad)
    fake, _ = g.cache
    assert float(fake[1, 1000:].abs().max()) == 0.0  # padding is masked


def test_codebook_usage():
    usage = CodebookUsage(2, 4)
    usage.update(torch.tensor([[[0, 1, 2, 3], [0, 0, 0, 0]]]))
    stats = usage.compute()
    assert stats["codebook/0/perplexity"] == pytest.approx(4.0)
    assert stats["codebook/0/used"] == 1.0
    assert stats["codebook/1/perplexity"] == pytest.approx(1.0)
    assert stats["codebook/1/used"] == 0.25
    assert usage.compute() == {}
