import json
import math
import os
import signal

import pytest
import torch
from safetensors import safe_open
from torch import nn

from data_sim.dataset import collate
from l3se.models.codec import WavCodec
from l3se.models.discriminators import Discriminator, DiscriminatorConfig
from l3se.models.llm import LLMConfig
from l3se.models.lm import SpeechLM, SpeechLMConfig
from l3se.models.s2t import WavS2T, WavS2TConfig
from l3se.models.ssl import SSLConfig
from l3se.training.checkpoint import (
    CheckpointError,
    frozen_parts,
    list_checkpoints,
    split_tensors,
)
from l3se.training.codec_task import CodecTask
from l3se.training.distributed import seed_everything
from l3se.training.engine import Trainer
from l3se.training.lm_task import LMTask
from l3se.training.options import OptimConfig, TrainConfig
from l3se.training.s2t_task import S2TTask
from l3se.training.schedule import warmup_cosine
from tests.models.test_lm import TINY_LLM
from tests.models.tiny import tiny_codec_config
from tests.training.synthetic import SyntheticSpeech
from tests.training.test_lm_recipe import tiny_ni_encoder


def make_trainer(out, max_steps=3, seconds=0.16, n=4, val=False, gan=False, batch_size=2,
                 **train):
    seed_everything(0)
    disc = Discriminator(DiscriminatorConfig(periods=[2], fft_sizes=[512])) if gan else None
    task = CodecTask(WavCodec(tiny_codec_config()), discriminator=disc)
    cfg = TrainConfig(
        output_dir=str(out), max_steps=max_steps, batch_size=batch_size, num_workers=0,
        log_every=1, val_every=1000, ckpt_every=1000, progress=False, **train,
    )
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=2)
    data = SyntheticSpeech(n=n, seconds=seconds)
    val_set = SyntheticSpeech(n=2, seconds=seconds, seed=1) if val else None
    return Trainer(task, cfg, optim, data, collate, val_set=val_set, optim_d=optim if gan else None)


def params(trainer):
    return {k: v.clone() for k, v in trainer.task.state_dict().items()}


def weights(module):
    """Trainable weights only: buffers (codebook usage) change on every forward."""
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_warmup_cosine():
    lrs = [warmup_cosine(s, 1.0, 0.1, 10, 110) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)
    assert lrs[110] == lrs[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    # 4 examples, 2 micro-batches of 1 per step: 2 steps per epoch, so the split run resumes
    # mid-epoch and then crosses into the next one.
    full = make_trainer(tmp_path / "full", batch_size=1, grad_accum=2, val=True)
    assert full.fit() == 3
    assert (tmp_path / "full" / "model" / "model.safetensors").is_file()
    assert any((tmp_path / "full" / "tb").iterdir())

    first = make_trainer(tmp_path / "split", batch_size=1, grad_accum=2, val=True)
    assert first.fit(stop_at=1) == 1
    assert not (tmp_path / "split" / "model").exists()
    second = make_trainer(tmp_path / "split", batch_size=1, grad_accum=2, val=True)
    assert second.fit() == 3
    a, b = params(full), params(second)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in full.optimizers:
        sa, sb = full.optimizers[name].state_dict(), second.optimizers[name].state_dict()
        for pid in sa["state"]:
            for key, v in sa["state"][pid].items():
                assert torch.equal(v, sb["state"][pid][key]), (name, pid, key)


def test_checkpoint_round_trip_is_exact(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, n=2)
    trainer.fit()
    saved = params(trainer)
    opt_state = trainer.optimizers["generator"].state_dict()
    rng = torch.get_rng_state()
    torch.manual_seed(123)
    restored = make_trainer(tmp_path, max_steps=2, n=2)
    restored._resume()
    assert restored.step == 2
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in params(restored).items():
        assert torch.equal(v, saved[k]), k
    new_state = restored.optimizers["generator"].state_dict()
    assert new_state["param_groups"] == opt_state["param_groups"]
    for pid, st in opt_state["state"].items():
        for key, v in st.items():
            assert torch.equal(v, new_state["state"][pid][key])


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    make_trainer(tmp_path, max_steps=1, n=2).fit()
    (folder,) = list_checkpoints(tmp_path / "checkpoints")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or damaged: model.safetensors"):
        make_trainer(tmp_path, max_steps=2).fit()
    (folder / "state.json").write_text('{"state": {"st')
    with pytest.raises(CheckpointError, match="state.json is unreadable"):
        make_trainer(tmp_path, max_steps=2).fit()


def test_a_step_needs_a_valid_global_batch(tmp_path):
    from l3se.config import ConfigError

    with pytest.raises(ConfigError, match="train.grad_accum must be at least 1, got 0"):
        make_trainer(tmp_path, grad_accum=0)
    # 2 per process x 1 process x 3 accumulation = 6 examples per step, from 4.
    with pytest.raises(ConfigError, match="fewer than one step's global batch of 6"):
        make_trainer(tmp_path, grad_accum=3)


def test_overfits_one_utterance(tmp_path):
    """Tiny codec-1 on one short utterance: mel loss halves, log-spectral distance improves."""
    seed_everything(0)
    task = CodecTask(WavCodec(tiny_codec_config()))
    data = SyntheticSpeech(n=1, seconds=0.64)
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=80, batch_size=1, num_workers=0,
                      log_every=10**6, val_every=10**6, ckpt_every=10**6, progress=False)
    trainer = Trainer(task, cfg, OptimConfig(lr=1e-2, min_lr=1e-2, warmup_steps=1), data, collate)
    batch = collate([data[0]])

    def evaluate():
        task.eval()
        with torch.no_grad():
            metrics = task.validation_step(batch).metrics
        return {k: float(v) for k, v in metrics.items()}

    before = evaluate()
    step = 0
    while step < cfg.max_steps:
        step = trainer.fit(stop_at=step + 10)
        after = evaluate()
        if after["mel"] <= before["mel"] / 2:
            break
    print(f"after {step} steps: {before} -> {after}")
    assert after["mel"] <= before["mel"] / 2
    assert after["lsd"] < before["lsd"] - 5
    assert math.isfinite(after["si_sdr"])


def test_a_non_finite_gradient_skips_the_update(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, resume=False)
    training_step = trainer.task.training_step

    def poisoned(batch, step):
        out = training_step(batch, step)
        if step == 1:
            out.loss = out.loss * float("nan")
        return out

    trainer.task.training_step = poisoned
    trainer.fit(stop_at=1)
    before = weights(trainer.task)
    adam = trainer.optimizers["generator"]
    moments = {id(p): {k: v.clone() for k, v in adam.state[p].items()} for p in adam.state}
    trainer.fit(stop_at=2)
    assert trainer.skipped_steps == 1
    for k, v in weights(trainer.task).items():
        assert torch.equal(v, before[k]), k
    for p in adam.state:
        for k, v in adam.state[p].items():
            assert torch.equal(v, moments[id(p)][k]), k
    # The NaN gradients are dropped with the update: the next step trains normally.
    assert trainer.fit() == 3 and trainer.skipped_steps == 1
    after = weights(trainer.task)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_an_interrupt_saves_a_checkpoint_that_resume_continues(tmp_path):
    full = make_trainer(tmp_path / "full", max_steps=4, batch_size=1, grad_accum=2)
    full.fit()

    interrupted = make_trainer(tmp_path / "run", max_steps=4, batch_size=1, grad_accum=2)
    training_step = interrupted.task.training_step

    def interrupt(batch, step):
        if step == 2:
            raise KeyboardInterrupt
        return training_step(batch, step)

    interrupted.task.training_step = interrupt
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000002"]
    assert not (tmp_path / "run" / "model").exists()

    resumed = make_trainer(tmp_path / "run", max_steps=4, batch_size=1, grad_accum=2)
    assert resumed.fit() == 4
    a, b = params(full), params(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ctrl_c_between_the_generator_and_discriminator_updates_finishes_the_step(tmp_path):
    # A real SIGINT after the generator's update: stopping there would save a generator already
    # updated for a step that resume redoes. The engine holds the signal until the step is whole.
    full = make_trainer(tmp_path / "full", max_steps=3, gan=True)
    full.fit()

    interrupted = make_trainer(tmp_path / "run", max_steps=3, gan=True)
    discriminator_step = interrupted.task.discriminator_step

    def ctrl_c(cache, step):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return discriminator_step(cache, step)

    interrupted.task.discriminator_step = ctrl_c
    # Whatever the test process had: Python's default, or SIG_IGN under `nohup ... &`.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000002"]
    assert signal.getsignal(signal.SIGINT) is before

    resumed = make_trainer(tmp_path / "run", max_steps=3, gan=True)
    assert resumed.fit() == 3
    a, b = params(full), params(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k

def test_gan_step_with_gradient_accumulation(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, gan=True, batch_size=1, grad_accum=2)
    task = trainer.task
    disc = list(task.discriminator.parameters())
    generator = trainer.networks["generator"].params
    seen = {"generator": [], "discriminator": [], "caches": 0}
    for name, params_of_the_other in (("generator", disc), ("discriminator", generator)):
        opt = trainer.optimizers[name]

        def step(opt_step=opt.step, name=name, others=params_of_the_other):
            # What each update sees: its own gradients, none of the other network's.
            seen[name].append((all(p.grad is None for p in others),
                               any(p.grad is not None for p in trainer.networks[name].params)))
            opt_step()

        opt.step = step
    discriminator_step = task.discriminator_step

    def count(cache, step):
        seen["caches"] += 1
        return discriminator_step(cache, step)

    task.discriminator_step = count
    disc_before, gen_before = weights(task.discriminator), weights(task.codec)
    assert trainer.fit() == 2
    assert seen["generator"] == seen["discriminator"] == [(True, True)] * 2
    assert seen["caches"] == 4  # every micro-batch's fakes reach the discriminator
    assert all(p.requires_grad for p in disc)
    for before, module in ((disc_before, task.discriminator), (gen_before, task.codec)):
        after = weights(module)
        moved = sum(not torch.equal(after[k], before[k]) for k in before)
        assert moved > len(before) / 2, (moved, len(before))


def trainer_for(make_task, out, max_steps=3, **train) -> Trainer:
    """A Trainer on ``make_task()``, built after seeding as ``run_stage`` builds a stage's task:
    2 examples, one per step."""
    seed_everything(0)
    cfg = TrainConfig(
        output_dir=str(out), max_steps=max_steps, batch_size=1, num_workers=0, log_every=1,
        val_every=1000, ckpt_every=1000, progress=False, **train,
    )
    optim = OptimConfig(lr=1e-3, min_lr=1e-5, warmup_steps=2)
    return Trainer(make_task(), cfg, optim, SyntheticSpeech(n=2, seconds=0.16), collate)


def tiny_lm_task() -> LMTask:
    lm = SpeechLM(SpeechLMConfig(
        llm=LLMConfig(pretrained=None, arch=TINY_LLM), acoustic_dim=32, semantic_dim=24,
        adapter_hidden=16, codebook_size=64,
    ))
    return LMTask(lm, tiny_ni_encoder(), WavCodec(tiny_codec_config()))


def test_weight_decay_spares_vectors(tmp_path):
    trainer = make_trainer(tmp_path, gan=True)
    names = {id(p): n for n, p in trainer.task.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for opt in trainer.optimizers.values()
             for g in opt.param_groups for p in g["params"]}
    assert len(decay) == sum(p.requires_grad for p in trainer.task.parameters())
    for name in ("codec.mixture.logits", "codec.encoder.backbone.norm.weight",
                 "codec.encoder.backbone.norm.bias", "codec.encoder.backbone.convnext.0.gamma",
                 "codec.decoder.head.out.bias", "codec.quantizer.quantizers.0.in_proj.weight_g",
                 "discriminator.dac.discriminators.0.convs.0.0.weight_g"):
        assert decay[name] == 0.0, name
    for name in ("codec.encoder.backbone.convnext.0.pwconv1.weight",
                 "codec.quantizer.quantizers.0.codebook.weight",
                 "codec.quantizer.quantizers.0.in_proj.weight_v",
                 "discriminator.dac.discriminators.0.convs.0.0.weight_v"):
        assert decay[name] == 0.01, name


def test_frozen_parts_are_the_largest_untrained_modules():
    task = nn.Module()
    task.head = nn.Linear(2, 2)
    task.teacher = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)).requires_grad_(False)
    # A model that is frozen but for its top: only the frozen backbone is a part.
    task.model = nn.Sequential(nn.Linear(2, 2).requires_grad_(False), nn.Linear(2, 2))
    task.loss = nn.Module()
    task.loss.register_buffer("window", torch.ones(4), persistent=False)
    assert frozen_parts(task) == ["teacher", "model.0"]
    trained, frozen = split_tensors(task)
    assert set(trained) == {"head.weight", "head.bias", "model.1.weight", "model.1.bias",
                            "loss.window"}
    assert {p: set(t) for p, t in frozen.items()} == {
        "teacher": {"0.weight", "0.bias", "1.weight", "1.bias"}, "model.0": {"weight", "bias"}}


def test_paper_s2t_checkpoint_leaves_out_wavlm_and_qwen3():
    cfg = WavS2TConfig(ssl=SSLConfig(pretrained=None, arch="large"),
                       llm=LLMConfig(pretrained=None, arch="0.6b"), vocab_size=151936)
    with torch.device("meta"):
        task = S2TTask(WavS2T(cfg))
    trained, frozen = split_tensors(task)
    assert list(frozen) == ["model.ssl", "model.llm"]
    assert {k.split(".")[1] for k in trained} == {"mixture", "encoder", "proj"}


def test_checkpoints_hold_what_trains_and_check_the_frozen_parts(tmp_path):
    full = trainer_for(tiny_lm_task, tmp_path / "full")
    full.fit()
    trainer_for(tiny_lm_task, tmp_path / "run").fit(stop_at=1)
    (folder,) = list_checkpoints(tmp_path / "run" / "checkpoints")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    lm = full.task.lm
    assert saved == {f"lm.{k}" for k, _ in [*lm.named_parameters(), *lm.named_buffers()]}
    manifest = json.loads((folder / "state.json").read_text())
    assert set(manifest["frozen"]) == {"ni_encoder", "codec"}

    resumed = trainer_for(tiny_lm_task, tmp_path / "run")
    assert resumed.fit() == 3
    a, b = params(full), params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def retrained_encoder() -> LMTask:
        task = tiny_lm_task()
        with torch.no_grad():
            task.ni_encoder.acoustic_mixture.logits.add_(1.0)
        return task

    with pytest.raises(CheckpointError, match="trained with another frozen 'ni_encoder'"):
        trainer_for(retrained_encoder, tmp_path / "run", max_steps=4).fit()


def test_resume_restores_codebook_restart_counters(tmp_path):
    # Exports leave the counters out; a resumed run must not count idle frames from 0 again.
    def task() -> CodecTask:
        return CodecTask(WavCodec(tiny_codec_config()), dead_code_frames=2)

    full = trainer_for(task, tmp_path / "full", max_steps=4)
    full.fit()
    trainer_for(task, tmp_path / "run", max_steps=4).fit(stop_at=2)
    resumed = trainer_for(task, tmp_path / "run", max_steps=4)
    resumed.fit()
    assert torch.equal(full.task.codec.idle_frames, resumed.task.codec.idle_frames)
    a, b = params(full), params(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cpu_training_threads_default_to_one_unless_asked(monkeypatch):
    import torch

    from l3se.training.engine import cpu_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        cpu_threads(None)
        assert torch.get_num_threads() == 2  # the environment's choice stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        cpu_threads(None)
        assert torch.get_num_threads() == 1
        cpu_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
