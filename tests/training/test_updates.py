"""Issue 27 items 2, 3, 5, 6 and 11: each network's schedule counts its own updates, logs are
count-weighted means, the writer closes on Ctrl-C, frozen parts are hashed once per run, and
parameter groups take their own optimizer, rate and weight decay."""

import pytest
import torch

from l3se.config import ConfigError
from l3se.models.codec import WavCodec
from l3se.models.codec_objectives import CodecObjective, CodecStep, ObjectiveOutput
from l3se.models.discriminators import Discriminator, DiscriminatorConfig
from l3se.training import checkpoint as ckpt
from l3se.training import codec_task, engine
from l3se.training.codec_task import CodecTask
from l3se.training.distributed import seed_everything
from l3se.training.options import OptimConfig, ParamGroupConfig
from tests.models.tiny import tiny_codec_config
from tests.training.test_codec3 import trainer
from tests.training.test_engine import make_trainer, tiny_lm_task, trainer_for


def gan_task(warmup: int) -> CodecTask:
    seed_everything(0)
    disc = Discriminator(DiscriminatorConfig(periods=[2], fft_sizes=[512]))
    return CodecTask(WavCodec(tiny_codec_config()), discriminator=disc, generator_warmup=warmup)


def test_the_generator_schedule_starts_at_its_first_update(tmp_path, monkeypatch):
    calls = []
    generator_loss = codec_task.generator_loss
    monkeypatch.setattr(codec_task, "generator_loss",
                        lambda *a: calls.append(1) or generator_loss(*a))
    task = gan_task(warmup=2)
    run = trainer(tmp_path, task, max_steps=4)
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=2)
    run.networks = run._networks(task, optim, optim)
    run.optimizers = {k: o for n in run.networks.values() for k, o in n.optimizers.items()}
    run.fit(stop_at=2)
    # Nothing of the generator's adversarial loss is computed while it waits.
    assert not calls
    run.fit(stop_at=3)
    assert calls
    # The generator's first update is the first of its 2 warm-up updates; the discriminator has
    # made 3 and is past its warm-up.
    assert run.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(0.5e-3)
    assert run.optimizers["discriminator"].param_groups[0]["lr"] > 0.5e-3


class RareObjective(CodecObjective):
    """Logs ``x`` = 4 over 2 items on step 0 and over none on step 1."""

    name = "rare"

    def forward(self, step: CodecStep) -> ObjectiveOutput:
        zero = step.recon.sum() * 0.0
        scored = 2.0 if step.step == 0 else 0.0
        return ObjectiveOutput(zero, {"x": torch.tensor(4.0 * bool(scored))},
                               counts={"x": torch.tensor(scored)})


def test_a_term_only_some_batches_have_is_logged_as_their_mean(tmp_path, monkeypatch):
    logged = []
    average = engine.average_scalars
    monkeypatch.setattr(engine, "average_scalars", lambda *a: logged.append(average(*a))
                        or logged[-1])
    seed_everything(0)
    task = CodecTask(WavCodec(tiny_codec_config()), objectives=[RareObjective()])
    run = trainer(tmp_path, task, max_steps=2)
    run.cfg.log_every = 2
    run.fit()
    assert logged[-1]["rare/x"] == pytest.approx(4.0)
    assert logged[-1]["loss"] == pytest.approx(logged[-1]["mel"] * 15, rel=0.2)


def test_ctrl_c_closes_the_tensorboard_writer(tmp_path):
    run = make_trainer(tmp_path, max_steps=3)
    closed = []

    def interrupt(batch, step):
        closed.append(run.writer)
        raise KeyboardInterrupt

    run.task.training_step = interrupt
    with pytest.raises(KeyboardInterrupt):
        run.fit()
    assert closed[0] is not None and run.writer is None


def test_frozen_parts_are_hashed_once_per_run(tmp_path, monkeypatch):
    hashed = []
    fingerprint = ckpt.fingerprint
    monkeypatch.setattr(ckpt, "fingerprint", lambda t: hashed.append(1) or fingerprint(t))
    def run():
        t = trainer_for(tiny_lm_task, tmp_path, max_steps=3)
        t.cfg.ckpt_every = 1
        return t

    run().fit(stop_at=2)
    assert len(hashed) == 2  # ni_encoder and codec, for 2 checkpoints
    hashed.clear()
    assert run().fit() == 3
    assert len(hashed) == 2  # the resume's check serves the save too


def test_parameter_groups_take_their_own_optimizer_rate_and_decay(tmp_path):
    seed_everything(0)
    task = CodecTask(WavCodec(tiny_codec_config()))
    optim = OptimConfig(optimizer="sgd", lr=1e-3, min_lr=1e-5, warmup_steps=1, momentum=0.9,
                        groups=[ParamGroupConfig(params=["codec.decoder"], optimizer="adamw",
                                                 lr=1e-2, weight_decay=0.0)])
    run = trainer(tmp_path, task, max_steps=2)
    run.networks = run._networks(task, optim, None)
    run.optimizers = {k: o for n in run.networks.values() for k, o in n.optimizers.items()}
    assert set(run.optimizers) == {"generator", "generator-adamw"}
    sgd, adamw = run.optimizers["generator"], run.optimizers["generator-adamw"]
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adamw, torch.optim.AdamW)
    decoder = {id(p) for p in task.codec.decoder.parameters()}
    assert {id(p) for g in adamw.param_groups for p in g["params"]} == decoder
    assert all(g["weight_decay"] == 0.0 for g in adamw.param_groups)
    run.fit(stop_at=1)
    assert adamw.param_groups[0]["lr"] == pytest.approx(1e-2)
    assert sgd.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match=r"optim.groups\[0\]: no trainable parameter is named "
                                          "codec.vocoder"):
        run._networks(task, OptimConfig(groups=[ParamGroupConfig(params=["codec.vocoder"])]),
                      None)
