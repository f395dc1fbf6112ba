"""One step of a task whose ranks take different branches, run by test_ddp.py under torchrun
with 2 processes: rank 1 alone uses ``rank_one`` and logs ``only_one``; no rank uses
``unused``. Rank 0 writes what changed and what was logged to ``<out>/result.json``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from data_sim.dataset import collate
from l3se.training import engine
from l3se.training.distributed import seed_everything, teardown
from l3se.training.engine import Trainer
from l3se.training.options import OptimConfig, TrainConfig
from l3se.training.task import StepOutput, Task
from tests.training.synthetic import SyntheticSpeech


class BranchTask(Task):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank
        self.shared = nn.Linear(4, 1)
        self.rank_one = nn.Linear(4, 1)
        self.unused = nn.Linear(4, 2)  # a matrix: AdamW would decay it

    def training_step(self, batch: dict, step: int) -> StepOutput:
        x = batch["clean"][:, :4]
        loss = self.shared(x).square().mean()
        logs = {}
        if self.rank == 1:
            extra = self.rank_one(x).square().mean()
            loss = loss + extra
            logs["only_one"] = extra.detach()
        logs["loss"] = loss.detach()
        return StepOutput(loss=loss, logs=logs)

    def export(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)


def main(out: str) -> None:
    seed_everything(0)
    rank = int(os.environ.get("RANK", "0"))
    task = BranchTask(rank)
    logged = []
    average = engine.average_scalars
    engine.average_scalars = lambda *a: logged.append(average(*a)) or logged[-1]
    cfg = TrainConfig(output_dir=out, max_steps=1, batch_size=1, num_workers=0, log_every=1,
                      progress=False, resume=False)
    optim = OptimConfig(lr=1e-2, warmup_steps=1, weight_decay=0.5)
    trainer = Trainer(task, cfg, optim, SyntheticSpeech(n=2, seconds=0.02), collate)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    trainer.fit()
    if trainer.env.is_main:
        adam = trainer.optimizers["generator"]
        result = {
            "changed": sorted(k for k, v in task.state_dict().items()
                              if not torch.equal(v, before[k])),
            "unused_state": any(p in adam.state for p in task.unused.parameters()),
            "logged": logged[-1],
        }
        (Path(out) / "result.json").write_text(json.dumps(result))
    teardown()


if __name__ == "__main__":
    main(sys.argv[1])
