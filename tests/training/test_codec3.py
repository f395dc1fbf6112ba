"""codec-3's task mechanics: trained parts, the discriminator warm-up and extra objectives."""

import pytest
import torch

from data_sim.dataset import collate
from l3se.models.codec import WavCodec
from l3se.models.codec_objectives import CodecObjective, CodecStep, ObjectiveOutput
from l3se.models.discriminators import Discriminator, DiscriminatorConfig
from l3se.training.codec_task import CodecTask
from l3se.training.distributed import seed_everything
from l3se.training.engine import Trainer
from l3se.training.options import OptimConfig, TrainConfig
from tests.models.tiny import tiny_codec_config
from tests.training.synthetic import SyntheticSpeech


class LoudnessObjective(CodecObjective):
    """Pulls the reconstruction's level towards ``target`` and records what it was shown."""

    name = "loud"

    def __init__(self, target: float = 0.5):
        super().__init__()
        self.target = target
        self.seen: list[CodecStep] = []

    def forward(self, step: CodecStep) -> ObjectiveOutput:
        self.seen.append(step)
        level = step.recon.abs().mean()
        return ObjectiveOutput(loss=100.0 * (level - self.target) ** 2,
                               logs={"level": level.detach()})


def trainer(out, task, max_steps=3):
    cfg = TrainConfig(output_dir=str(out), max_steps=max_steps, batch_size=2, num_workers=0,
                      log_every=1, val_every=1000, ckpt_every=1000, progress=False)
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=1)
    disc = task.discriminator is not None
    return Trainer(task, cfg, optim, SyntheticSpeech(n=4, seconds=0.16), collate,
                   val_set=SyntheticSpeech(n=2, seconds=0.16, seed=1),
                   optim_d=optim if disc else None)


def weights(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before, module):
    return {k for k, v in module.named_parameters() if not torch.equal(v.detach(), before[k])}


def test_only_the_named_parts_train(tmp_path):
    seed_everything(0)
    task = CodecTask(WavCodec(tiny_codec_config()), train_parts=["quantizer", "decoder"])
    before = weights(task.codec)
    trainer(tmp_path, task).fit()
    moved = {k.split(".")[0] for k in changed(before, task.codec)}
    assert moved == {"quantizer", "decoder"}
    with pytest.raises(ValueError, match="no codec part named ssl, vocoder; choose from mixture, "
                                         "encoder, quantizer, decoder"):
        CodecTask(WavCodec(tiny_codec_config()), train_parts=["vocoder", "ssl"])


def test_the_warmup_trains_the_discriminator_alone(tmp_path):
    seed_everything(0)
    disc = Discriminator(DiscriminatorConfig(periods=[2], fft_sizes=[512]))
    task = CodecTask(WavCodec(tiny_codec_config()), discriminator=disc,
                     objectives=[LoudnessObjective()], generator_warmup=2)
    codec_before, disc_before = weights(task.codec), weights(disc)
    run = trainer(tmp_path, task)
    run.fit(stop_at=2)
    assert not changed(codec_before, task.codec)
    assert changed(disc_before, disc)
    # The objective is not even computed while the generator waits.
    assert not task.objectives["loud"].seen
    run.fit()
    assert changed(codec_before, task.codec)
    # Step 2's training batch, then the final validation.
    first = task.objectives["loud"].seen[0]
    assert first.step == 2 and first.recon.requires_grad
    with pytest.raises(ValueError, match="needs one"):
        CodecTask(WavCodec(tiny_codec_config()), generator_warmup=2)


def test_an_objective_sees_the_step_and_adds_its_loss(tmp_path):
    seed_everything(0)
    objective = LoudnessObjective(target=0.5)
    task = CodecTask(WavCodec(tiny_codec_config()), objectives=[objective])
    plain = CodecTask(WavCodec(tiny_codec_config()))
    plain.load_state_dict(task.state_dict(), strict=False)
    batch = collate([SyntheticSpeech(n=2, seconds=0.16)[i] for i in range(2)])
    out, base = task.training_step(batch, 7), plain.training_step(batch, 7)
    s = objective.seen[0]
    assert s.step == 7 and s.recon.requires_grad and s.quantized.requires_grad
    assert s.codes.shape[:2] == (2, task.codec.cfg.n_codebooks)
    assert s.quantized.shape == (2, task.codec.cfg.dim, s.codes.shape[-1])
    assert len(s.texts) == len(s.words) == 2
    level = float(out.logs["loud/level"])
    assert float(out.loss - base.loss) == pytest.approx(100 * (level - 0.5) ** 2, rel=1e-4)
    # The objective's gradient reaches the encoder through the straight-through quantizer.
    (out.loss - base.loss.detach()).backward()
    assert next(task.codec.encoder.parameters()).grad.abs().sum() > 0

    run = trainer(tmp_path, task, max_steps=2)
    run.fit()
    assert "loud/level" in run.validate()
