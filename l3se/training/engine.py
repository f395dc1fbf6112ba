"""The training loop shared by every l3se stage.

One optimizer step = ``grad_accum`` micro-batches of ``train.batch_size`` examples on each
process through ``task.training_step`` (generator), gradients averaged over processes, then, for
GAN tasks, the same micro-batches' caches through ``task.discriminator_step``. The
generator goes first so that accumulation never holds more than one generator graph; its
adversarial loss therefore sees the discriminator from before this step's update, a half-step
shift from DAC's loop that removes a second generator forward.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from l3se.config import ConfigError, save_config
from l3se.training import checkpoint as ckpt
from l3se.training.distributed import (
    DistEnv,
    average_gradients,
    average_scalars,
    barrier,
    broadcast_module,
    build_sampler,
    seed_everything,
    setup,
)
from l3se.training.optim import Network, build_network
from l3se.training.options import OptimConfig, RecipeConfig, TrainConfig
from l3se.training.task import Task

log = logging.getLogger(__name__)


def cpu_threads(threads: int | None) -> None:
    """torch's intra-op threads for CPU training: ``threads``, else OMP_NUM_THREADS's count when
    the environment sets one, else 1 (see ``TrainConfig.threads``)."""
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        return
    torch.set_num_threads(threads or 1)


class Trainer:
    def __init__(
        self,
        task: Task,
        cfg: TrainConfig,
        optim: OptimConfig,
        train_set: Dataset,
        collate_fn: Callable[[list], dict],
        val_set: Dataset | None = None,
        optim_d: OptimConfig | None = None,
        run_config: RecipeConfig | None = None,
        name: str = "train",
        order: str = "shuffle",
        shuffle_window: int = 1000,
    ):
        """``order`` and ``shuffle_window``: the training set's reading order
        (``DataConfig.order``, ``l3se.training.distributed.build_sampler``)."""
        self.cfg = cfg
        self.name = name
        self.run_config = run_config
        self.env: DistEnv = setup(cfg.device)
        if self.env.device.type == "cpu":
            cpu_threads(cfg.threads)
        self.global_batch = cfg.global_batch(self.env.world_size)
        # What one forward/backward pass of this process sees.
        self.micro_batch = cfg.batch_size
        self.task = task.to(self.env.device)
        if self.env.world_size > 1:
            broadcast_module(self.task)

        self.networks = self._networks(task, optim, optim_d)
        # Every torch optimizer by its checkpoint name.
        self.optimizers = {k: o for net in self.networks.values()
                           for k, o in net.optimizers.items()}

        self.train_set = train_set
        self.val_set = val_set
        self.collate_fn = collate_fn
        self.sampler = build_sampler(train_set, self.env, cfg.seed, order, shuffle_window)
        self.steps_per_epoch = self.sampler.num_samples // (self.micro_batch * cfg.grad_accum)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"the training set has {len(train_set)} examples, fewer than one step's "
                f"global batch of {self.global_batch} (train.batch_size x processes x "
                "train.grad_accum)"
            )
        dev = self.env.device.type
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev == "cuda")

        self.output_dir = Path(cfg.output_dir)
        self.ckpt_root = self.output_dir / "checkpoints"
        self.step = 0
        self.last_saved = -1
        self.writer = None
        # Per logged key since the last log: the count-weighted sum of its values and the count.
        self._sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        self._counts: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
        self._window_steps = 0
        # The frozen parts' fingerprints: they cannot change during a run, so hashed once.
        self._fingerprints: dict[str, str] | None = None
        self._times = {"data": 0.0, "step": 0.0}
        # Seconds spent in training steps and, within them, waiting for data, since construction.
        self.timings = {"data": 0.0, "step": 0.0, "steps": 0}
        self.skipped_steps = 0

    def _networks(
        self, task: Task, optim: OptimConfig, optim_d: OptimConfig | None
    ) -> dict[str, Network]:
        names = {id(p): n for n, p in task.named_parameters()}
        generator = [(names[id(p)], p) for p in task.generator_parameters()]
        if not generator:
            raise ValueError(f"{type(task).__name__} has no trainable parameters")
        updates = self.cfg.max_steps - task.generator_warmup
        networks = {"generator": build_network("generator", optim, generator, updates)}
        if task.discriminator is not None:
            if optim_d is None:
                raise ConfigError("this stage trains a discriminator: its config needs optim_d")
            disc = [(names[id(p)], p) for p in task.discriminator.parameters()]
            networks["discriminator"] = build_network("discriminator", optim_d, disc,
                                                      self.cfg.max_steps, "optim_d")
        elif optim_d is not None:
            raise ConfigError("optim_d is set but this stage trains no discriminator")
        return networks

    # ---- public ------------------------------------------------------------------------------

    def fit(self, stop_at: int | None = None) -> int:
        """Train until ``train.max_steps`` (or ``stop_at`` steps, e.g. to split a long run into
        jobs), checkpointing on the way; at ``max_steps`` also export the model to
        ``output_dir/model``. Returns the number of steps done."""
        cfg = self.cfg
        target = min(stop_at, cfg.max_steps) if stop_at is not None else cfg.max_steps
        seed_everything(cfg.seed + self.env.rank)
        if self.env.is_main:
            log.info(cfg.batch_summary(self.env.world_size))
        if cfg.resume:
            self._resume()
        if self.env.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.run_config is not None:
                save_config(self.run_config, self.output_dir / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "tb"), purge_step=self.step)
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc=self.name,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.env.is_main and cfg.progress),
        )
        try:
            self._train_until(target, bar)
        finally:
            bar.close()
            self._close_writer()
        return self.step

    def _train_until(self, target: int, bar) -> None:
        cfg = self.cfg
        batches = self._batches()
        try:
            while self.step < target:
                self._train_step(batches)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == target:
                    self._log(bar)
                if self.val_set is not None and self.step % cfg.val_every == 0:
                    self.validate()
                if self.step % cfg.ckpt_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            # Collective saves could hang when another rank died; a lone process saves.
            if self.env.world_size == 1 and self.step > max(self.last_saved, 0):
                bar.write(f"interrupted: saving a checkpoint at step {self.step}")
                self.save_checkpoint()
            raise
        if self.step != self.last_saved:
            self.save_checkpoint()
        if self.step >= cfg.max_steps:
            if self.val_set is not None and self.step % cfg.val_every:
                self.validate()
            if self.env.is_main:
                self.task.export(self.output_dir / "model")
                log.info("model saved to %s", self.output_dir / "model")
            barrier(self.env)

    def _close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Average ``task.validation_step`` metrics over ``val_batches`` batches (rank 0)."""
        results: dict[str, float] = {}
        if self.env.is_main and self.val_set is not None:
            self.task.eval()
            loader = DataLoader(
                self.val_set,
                batch_size=self.micro_batch,
                shuffle=False,
                num_workers=self.cfg.num_workers,
                collate_fn=self.collate_fn,
            )
            sums: dict[str, float] = defaultdict(float)
            n = 0
            for i, batch in enumerate(loader):
                if i >= self.cfg.val_batches:
                    break
                batch = self._to_device(batch)
                with self._autocast():
                    out = self.task.validation_step(batch)
                for k, v in out.metrics.items():
                    sums[k] += float(v)
                n += 1
                if i == 0:
                    self._write_audio(out.audio, batch.get("lengths"))
            self.task.train()
            results = {k: v / max(n, 1) for k, v in sums.items()}
            if self.writer is not None:
                for k, v in results.items():
                    self.writer.add_scalar(f"val/{k}", v, self.step)
        barrier(self.env)
        return results

    def save_checkpoint(self) -> Path:
        """Collective: every rank writes its RNG state, rank 0 the rest, then an atomic rename."""
        tmp = self.ckpt_root / f"{ckpt.checkpoint_name(self.step)}.tmp"
        if self.env.is_main:
            ckpt.temporary_dir(self.ckpt_root, self.step)
        barrier(self.env)
        ckpt.write_rng(tmp, self.env.rank)
        barrier(self.env)
        final = self.ckpt_root / ckpt.checkpoint_name(self.step)
        if self.env.is_main:
            state = {"step": self.step, "world_size": self.env.world_size}
            ckpt.write_checkpoint(tmp, self.task, self.optimizers, state, self.run_config,
                                  self.frozen_fingerprints())
            ckpt.finalize(tmp, self.ckpt_root, self.step, self.cfg.keep_checkpoints)
        barrier(self.env)
        self.last_saved = self.step
        return final

    def frozen_fingerprints(self) -> dict[str, str]:
        """Frozen part -> SHA-256, computed on first use (a CPU copy of gigabytes at paper
        scale)."""
        if self._fingerprints is None:
            self._fingerprints = ckpt.frozen_fingerprints(self.task)
        return self._fingerprints

    # ---- internals ---------------------------------------------------------------------------

    def _resume(self) -> None:
        found = ckpt.list_checkpoints(self.ckpt_root)
        if not found:
            return
        state = ckpt.read_checkpoint(
            found[-1], self.task, self.optimizers, self.env.rank, self.env.device,
            self.frozen_fingerprints(),
        )
        self.step = self.last_saved = int(state["step"])
        if state.get("world_size") != self.env.world_size:
            log.warning(
                "resuming a %s-process run with %s processes: the data order will differ",
                state.get("world_size"),
                self.env.world_size,
            )
        if self.env.is_main:
            log.info("resumed from %s (step %d)", found[-1], self.step)

    def _batches(self) -> Iterator[dict]:
        """Micro-batches from the current step on; each epoch yields exactly
        ``steps_per_epoch * grad_accum`` of them, so a step number fixes the data position."""
        per_epoch = self.steps_per_epoch * self.cfg.grad_accum
        epoch, within = divmod(self.step, self.steps_per_epoch)
        while True:
            self.sampler.set_position(epoch, within * self.cfg.grad_accum * self.micro_batch)
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(epoch)
            generator = torch.Generator()
            generator.manual_seed(self.cfg.seed * 1_000_003 + epoch)
            loader = DataLoader(
                self.train_set,
                batch_size=self.micro_batch,
                sampler=self.sampler,
                num_workers=self.cfg.num_workers,
                collate_fn=self.collate_fn,
                drop_last=True,
                pin_memory=self.env.device.type == "cuda",
                generator=generator,
            )
            it = iter(loader)
            for _ in range(per_epoch - within * self.cfg.grad_accum):
                yield next(it)
            epoch, within = epoch + 1, 0

    def _train_step(self, batches: Iterator[dict]) -> None:
        start = time.perf_counter()
        task = self.task
        task.train()
        accum = self.cfg.grad_accum
        caches = []
        disc = task.discriminator
        with _frozen(disc) if disc is not None else contextlib.nullcontext():
            update = task.updates_generator(self.step)
            for _ in range(accum):
                t0 = time.perf_counter()
                batch = self._to_device(next(batches))
                waited = time.perf_counter() - t0
                self._times["data"] += waited
                self.timings["data"] += waited
                with self._autocast(), torch.set_grad_enabled(update):
                    out = task.training_step(batch, self.step)
                if update:
                    (out.loss / accum).backward()
                self._accumulate(out.logs, out.counts)
                caches.append(out.cache)
        with _uninterrupted():
            if update:
                self._optimizer_step("generator")
            if disc is not None:
                for cache in caches:
                    with self._autocast():
                        out = task.discriminator_step(cache, self.step)
                    (out.loss / accum).backward()
                    self._accumulate(out.logs, out.counts)
                self._optimizer_step("discriminator")
            self.step += 1
        self._window_steps += 1
        elapsed = time.perf_counter() - start
        self._times["step"] += elapsed
        self.timings["step"] += elapsed
        self.timings["steps"] += 1

    def _updates(self, name: str) -> int:
        """Updates network ``name`` has made before this step: its schedule's position."""
        warmup = self.task.generator_warmup if name == "generator" else 0
        return self.step - warmup

    def _optimizer_step(self, name: str) -> None:
        net = self.networks[name]
        if self.env.world_size > 1:
            average_gradients(net.params, self.env.world_size)
        clip = net.cfg.grad_clip if net.cfg.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(net.params, clip)
        lr = net.set_lr(self._updates(name))
        # All ranks hold the same averaged gradient, so they agree on skipping.
        finite = bool(torch.isfinite(norm))
        if not finite:
            self.skipped_steps += 1
            log.warning("step %d: non-finite %s gradient, update skipped", self.step, name)
        for opt in net.optimizers.values():
            if finite:
                opt.step()
            opt.zero_grad(set_to_none=True)
        self._accumulate({f"grad_norm/{name}": norm.detach(), f"lr/{name}": torch.tensor(lr)})

    def _accumulate(self, logs: dict[str, torch.Tensor],
                    counts: dict[str, torch.Tensor] | None = None) -> None:
        """Add one micro-batch's (or one update's) logs; ``counts``: how many items a value
        averages (default 1; 0: none, the value is ignored)."""
        counts = counts or {}
        for k, v in logs.items():
            c = counts.get(k, torch.ones(())).detach().float().cpu()
            self._sums[k] = self._sums[k] + v.detach().float().cpu() * c
            self._counts[k] = self._counts[k] + c

    def _log(self, bar) -> None:
        n = max(self._window_steps, 1)
        values = average_scalars(self._sums, self._counts, self.env)
        times = dict(self._times)
        self._sums.clear()
        self._counts.clear()
        self._window_steps = 0
        self._times = {"data": 0.0, "step": 0.0}
        if not self.env.is_main:
            return
        values["time/step_s"] = times["step"] / n
        values["time/data_share"] = times["data"] / max(times["step"], 1e-9)
        values.update(self.task.log_extras())
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k if "/" in k else f"train/{k}", v, self.step)
        if "loss" in values:
            bar.set_postfix(loss=f"{values['loss']:.4g}", refresh=False)
        if not self.cfg.progress:
            shown = {k: v for k, v in values.items() if "/" not in k}
            log.info(
                "step %d: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
            )

    def _write_audio(self, audio: dict[str, torch.Tensor], lengths: torch.Tensor | None) -> None:
        if self.writer is None:
            return
        for name, wav in audio.items():
            for i in range(min(self.cfg.audio_samples, wav.shape[0])):
                n = int(lengths[i]) if lengths is not None else wav.shape[-1]
                clip = wav[i, :n].detach().float().cpu().clamp(-1, 1)
                self.writer.add_audio(f"audio/{i}/{name}", clip[None], self.step, self.task.sample_rate)

    def _to_device(self, batch: dict) -> dict:
        dev = self.env.device
        return {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _autocast(self):
        return torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=self.bf16)


@contextlib.contextmanager
def _uninterrupted():
    """Hold Ctrl-C until the block ends, so that a step's updates land whole: a checkpoint saved
    on interrupt never holds a generator already updated for the step it will redo."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _frozen(module: nn.Module):
    """No weight gradients for ``module`` (the discriminator during the generator's update);
    gradients still flow through it to its inputs."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def train_stage(task: Task, cfg: RecipeConfig, name: str, stop_at: int | None = None) -> Path:
    """Fit ``task`` on a recipe config's ``data`` / ``valid`` / ``train`` / ``optim`` sections
    (mixtures simulated on the fly); returns the run's output directory. A task with nothing to
    train (distill without distillation, Table 3 (a)) is its own result: it is exported as is,
    and no data is read."""
    from data_sim.dataset import build_dataset, collate
    from l3se.training.distributed import teardown

    output_dir = Path(cfg.train.output_dir)
    if not task.generator_parameters():
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.yaml")
        task.export(output_dir / "model")
        return output_dir
    trainer = Trainer(
        task,
        cfg.train,
        cfg.optim,
        build_dataset(cfg.data),
        collate,
        val_set=build_dataset(cfg.valid) if cfg.valid is not None else None,
        optim_d=cfg.optim_d,
        run_config=cfg,
        name=name,
        order=cfg.data.order,
        shuffle_window=cfg.data.shuffle_window,
    )
    try:
        trainer.fit(stop_at=stop_at)
    finally:
        teardown()
    return output_dir
