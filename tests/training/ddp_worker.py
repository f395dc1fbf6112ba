"""Trains the tiny codec for one step on 6 examples and writes rank 0's final weights; run alone
(one process, batch 6) or under ``torchrun`` (batch 6 / WORLD_SIZE per process) by test_ddp.py."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from data_sim.dataset import collate
from l3se.models.codec import WavCodec
from l3se.models.weights import state_tensors
from l3se.training.codec_task import CodecTask
from l3se.training.distributed import seed_everything, teardown
from l3se.training.engine import Trainer
from l3se.training.options import OptimConfig, TrainConfig
from tests.models.tiny import tiny_codec_config
from tests.training.synthetic import SyntheticSpeech


def main(out: str) -> None:
    # Different seeds per rank on purpose: the engine must broadcast rank 0's weights.
    seed_everything(int(os.environ.get("RANK", "0")))
    task = CodecTask(WavCodec(tiny_codec_config()))
    # One step: the comparison is of the averaged gradient itself. From the second step on, float
    # noise grows tenfold (measured 5e-6 -> 5e-5, also between two single-process runs that
    # differ only in thread count), which would hide the errors this test is for.
    # train.batch_size is per process: 3 on each of 2 processes is one process's 6.
    cfg = TrainConfig(
        output_dir=out, max_steps=1, batch_size=6 // int(os.environ.get("WORLD_SIZE", "1")),
        num_workers=0, log_every=1, progress=False, resume=False,
    )
    # A large Adam eps: biases in front of a GroupNorm have a true gradient of zero, and
    # default-eps Adam would turn their float-rounding noise into full-size, order-dependent steps.
    optim = OptimConfig(lr=1e-3, warmup_steps=1, eps=1e-3)
    trainer = Trainer(task, cfg, optim, SyntheticSpeech(n=8, seconds=0.16), collate)
    if trainer.env.is_main:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_file(state_tensors(trainer.task), str(Path(out) / "initial.safetensors"))
    trainer.fit()
    if trainer.env.is_main:
        save_file(state_tensors(trainer.task), str(Path(out) / "final.safetensors"))
    teardown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1])
