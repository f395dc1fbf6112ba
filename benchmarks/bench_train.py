"""Training throughput of the tiny codec-1 or distill recipe on the CPU: the engine's optimizer
steps per second against a plain hand-written PyTorch loop over the same task and data, and the
share of the engine's step time spent waiting for the DataLoader (data simulation).

    .venv/bin/python benchmarks/bench_train.py [--stage distill] [--data data/starter] [--steps 8]
    .venv/bin/python benchmarks/bench_train.py --layouts [--steps 30]

``--layouts`` instead compares how the tiny codec-1 run uses a small machine: one process with
all cores' threads (torch's default), the same with OpenMP's passive wait, one thread, and two
one-thread DDP processes, each idle and beside a competing one-thread process, in seconds of
audio trained per second (ratio to the default last).

Runs ``recipes/configs/codec1/tiny.yaml`` (batch 4 x 1 s crops) or
``recipes/configs/distill/tiny.yaml`` (batch 4 x 2 s noisy mixtures, teachers built from the
codec-1 and s2t tiny architectures with random weights) as is through the real engine
(``Trainer``). The baseline is the loop one writes by hand: a shuffling DataLoader with the same
dataset, batch size and workers, ``task.training_step``, backward and an AdamW step, with none
of the engine's gradient clipping, learning-rate schedule, log accumulation or timing. Both
train the same task; rounds alternate the two, each round starting its own DataLoader, and
rates are medians over rounds. The ratio (engine / plain loop) is the engine's overhead: 1.00x
is none. Without ``--data`` it writes a small synthetic corpus (speech, noise, RIRs) to a
temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_sim.audio import write_audio
from data_sim.dataset import build_dataset, collate
from l3se.config import load_config
from l3se.models.tokenizer import build_tokenizer
from l3se.training.distributed import seed_everything
from l3se.training.engine import Trainer
from recipes.train_codec import CodecRecipeConfig, build_task
from recipes.train_s2t import S2TRecipeConfig

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
CONFIG = CONFIGS / "codec1" / "tiny.yaml"


def synthetic_speech(root: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    sr = 16000
    for i in range(n):
        t = np.arange(int(rng.uniform(2, 5) * sr)) / sr
        f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (np.sin(2 * np.pi * 2 * t) > -0.3)
        write_audio(root / f"s{i:03d}.wav", (0.3 * x).astype(np.float32))
    return root


def synthetic_noise_and_rirs(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    for i in range(4):
        write_audio(root / "noise" / f"n{i}.wav", (0.1 * rng.standard_normal(16000 * 5)).astype(np.float32))
        n = 4000
        rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
        rir[0] = 1.0
        write_audio(root / "rir" / f"r{i}.wav", rir.astype(np.float32))
    return root / "noise", root / "rir"


def distill_trainer(tmp: str, speech: Path, noise: Path, rir: Path, overrides: list[str]) -> tuple:
    """The tiny distill stage on random-weight tiny teachers saved to ``tmp``."""
    from l3se.models.codec import WavCodec
    from l3se.models.s2t import WavS2T
    from recipes.train_distill import DistillRecipeConfig
    from recipes.train_distill import build_task as build_distill

    codec = WavCodec(load_config(CodecRecipeConfig, CONFIG).model)
    codec.save_pretrained(f"{tmp}/codec")
    s2t_cfg = load_config(S2TRecipeConfig, CONFIGS / "s2t" / "tiny.yaml").model
    s2t_cfg.tokenizer = f"{tmp}/tok"
    build_tokenizer(["hello world number one two three"], s2t_cfg.tokenizer, 300)
    s2t = WavS2T(s2t_cfg)
    s2t.load_backbone_from(codec)
    s2t.save_pretrained(f"{tmp}/s2t")
    cfg = load_config(
        DistillRecipeConfig,
        CONFIGS / "distill" / "tiny.yaml",
        [*overrides, f"codec={tmp}/codec", f"s2t={tmp}/s2t", f"data.noise={noise}", f"data.rir={rir}"],
    )
    seed_everything(cfg.train.seed)
    task = build_distill("distill", cfg)
    return cfg, Trainer(task, cfg.train, cfg.optim, build_dataset(cfg.data), collate)


def plain_loop(trainer: Trainer, opt: torch.optim.Optimizer, steps: int) -> float:
    """Steps/s of a hand-written loop over the trainer's task and dataset."""
    cfg = trainer.cfg
    loader = torch.utils.data.DataLoader(
        trainer.train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
        collate_fn=collate, drop_last=True,
    )
    task = trainer.task.train()
    done = 0
    start = time.perf_counter()
    while done < steps:
        for batch in loader:
            loss = task.training_step(batch, done).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return steps / (time.perf_counter() - start)


def engine_steps(trainer: Trainer, steps: int) -> tuple[float, float, float]:
    """(steps/s, seconds waiting for data, seconds in steps) of ``steps`` engine steps."""
    before = dict(trainer.timings)
    trainer.fit(stop_at=trainer.step + steps)
    step_s = trainer.timings["step"] - before["step"]
    return steps / step_s, trainer.timings["data"] - before["data"], step_s


LAYOUTS = {
    # name -> (processes, threads per process, OpenMP wait policy or None)
    "1 process x 2 threads": (1, 2, None),
    "1 process x 2 threads, passive wait": (1, 2, "PASSIVE"),
    "1 process x 1 thread": (1, 1, None),
    "2 processes x 1 thread (gloo DDP)": (2, 1, None),
}


def layout_rate(layout: str, args, busy: bool, speech: Path, tmp: str) -> float:
    """Seconds of training audio per second for one layout, in fresh processes (thread settings
    apply at start-up), optionally beside a competing one-thread process. DDP halves the batch
    per process, so every layout trains the same global batch."""
    import json
    import subprocess
    import sys

    procs, threads, wait = LAYOUTS[layout]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if wait:
        env["OMP_WAIT_POLICY"] = wait
    # One run folder for all ranks: the engine's checkpoint at the stop is written together.
    worker = [__file__, "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--batch", str(4 // procs), "--speech", str(speech), "--out", tempfile.mkdtemp(dir=tmp)]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
            "--master_port", "29533", *worker] if procs > 1 else [sys.executable, *worker])
    rival = None
    if busy:
        rival = subprocess.Popen([sys.executable, "-c", COMPETITOR],
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    finally:
        if rival is not None:
            rival.kill()
    return json.loads(out.strip().splitlines()[-1])["audio_s_per_s"]


# Another program at full tilt on one core: what a laptop user runs beside training.
COMPETITOR = ("import torch\nx = torch.randn(256, 256)\n"
              "while True:\n    x = torch.tanh(x @ x) \n")


def worker(args) -> None:
    """One process of a layout: the tiny codec-1 engine's audio seconds per second."""
    import json

    from l3se.training.distributed import teardown

    cfg = load_config(CodecRecipeConfig, CONFIG, [
        f"data.speech={args.speech}", "valid=null", f"train.output_dir={args.out}",
        f"train.batch_size={args.batch}", f"train.max_steps={args.warmup + args.steps}",
        "train.ckpt_every=1000000", "train.log_every=1000000", "train.progress=false",
    ])
    seed_everything(cfg.train.seed)
    trainer = Trainer(build_task("codec-1", cfg), cfg.train, cfg.optim,
                      build_dataset(cfg.data), collate)
    engine_steps(trainer, args.warmup)
    rate = engine_steps(trainer, args.steps)[0]
    audio = rate * args.batch * trainer.env.world_size * cfg.data.mix.segment_seconds
    if trainer.env.is_main:
        print(json.dumps({"audio_s_per_s": audio}), flush=True)
    teardown()


def compare_layouts(args) -> None:
    print(f"tiny codec-1 on CPU ({os.cpu_count()} cores), global batch 4 x 1 s, "
          f"{args.steps} timed steps after {args.warmup}; seconds of audio trained per second")
    print(f"{'layout':38s} {'idle':>7s} {'busy':>7s}   (busy: beside a 1-thread competitor)")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        speech = (args.data / "speech" / "train.jsonl" if args.data
                  else synthetic_speech(Path(tmp) / "speech"))
        for layout in LAYOUTS:
            rates[layout] = tuple(layout_rate(layout, args, busy, speech, tmp)
                                  for busy in (False, True))
            print(f"{layout:38s} {rates[layout][0]:7.2f} {rates[layout][1]:7.2f}", flush=True)
    base = rates["1 process x 2 threads"]
    for layout, (idle, busy) in rates.items():
        print(f"ratio {layout} / 1 process x 2 threads: idle {idle / base[0]:.2f}x, "
              f"busy {busy / base[1]:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["codec-1", "distill"], default="codec-1")
    p.add_argument("--data", type=Path, help="starter corpus folder (default: synthetic)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per side and round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (alternating sides)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    p.add_argument("--layouts", action="store_true",
                   help="compare process/thread layouts of codec-1 instead, idle and busy")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=4, help=argparse.SUPPRESS)
    p.add_argument("--speech", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.layouts:
        return compare_layouts(args)
    with tempfile.TemporaryDirectory() as tmp:
        speech = (
            args.data / "speech" / "train.jsonl" if args.data else synthetic_speech(Path(tmp) / "speech")
        )
        overrides = [
            f"data.speech={speech}", "valid=null", f"train.output_dir={tmp}/run",
            f"train.max_steps={args.warmup + args.rounds * args.steps}",
            f"train.num_workers={args.workers}",
            "train.ckpt_every=1000000", "train.log_every=1000000", "train.progress=false",
        ]
        if args.stage == "distill":
            if args.data:
                noise, rir = args.data / "noise" / "train.jsonl", args.data / "rir" / "train.jsonl"
            else:
                noise, rir = synthetic_noise_and_rirs(Path(tmp))
            cfg, trainer = distill_trainer(tmp, speech, noise, rir, overrides)
        else:
            cfg = load_config(CodecRecipeConfig, CONFIG, overrides)
            seed_everything(cfg.train.seed)
            trainer = Trainer(
                build_task("codec-1", cfg), cfg.train, cfg.optim, build_dataset(cfg.data), collate
            )
        opt = torch.optim.AdamW(trainer.task.generator_parameters(), lr=cfg.optim.lr)
        engine_steps(trainer, args.warmup)
        plain_loop(trainer, opt, args.warmup)
        rates: dict[str, list[float]] = {"plain": [], "engine": []}
        waited = stepped = 0.0
        for _ in range(args.rounds):
            rate, data_s, step_s = engine_steps(trainer, args.steps)
            rates["engine"].append(rate)
            waited, stepped = waited + data_s, stepped + step_s
            rates["plain"].append(plain_loop(trainer, opt, args.steps))
    seg = cfg.data.mix.segment_seconds
    print(f"tiny {args.stage} on CPU: torch threads {torch.get_num_threads()}, workers "
          f"{args.workers}, batch {cfg.train.batch_size} x {seg:g} s, {args.rounds} rounds x "
          f"{args.steps} steps per side")
    print(f"{'steps/s':34s} {'median':>7s} {'min':>7s} {'max':>7s}   s of audio/s")
    names = {"plain": "plain PyTorch loop (baseline)", "engine": "l3se Trainer"}
    for key, name in names.items():
        r = rates[key]
        med = statistics.median(r)
        print(f"{name:34s} {med:7.2f} {min(r):7.2f} {max(r):7.2f}   "
              f"{med * cfg.train.batch_size * seg:10.1f}")
    print(f"engine: data loader share of step time {100 * waited / stepped:.1f}%")
    ratio = statistics.median(rates["engine"]) / statistics.median(rates["plain"])
    print(f"ratio engine / plain loop (steps/s): {ratio:.2f}x")


if __name__ == "__main__":
    main()
