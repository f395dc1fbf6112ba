"""The ttr stage: the Timed-Text Regularizer's summariser learns clean speech + word timings ->
the frozen text encoder's subword vectors (frozen WavLM, frozen text encoder)."""

from __future__ import annotations

from pathlib import Path

import torch

from l3se.models.codec_objectives import WordTimes
from l3se.models.ttr import Summarizer, batch_parts
from l3se.training.task import StepOutput, Task, ValOutput


class TTRTask(Task):
    def __init__(self, summarizer: Summarizer):
        super().__init__()
        self.summarizer = summarizer

    @staticmethod
    def word_times(batch: dict) -> list[WordTimes]:
        words = [m.get("words") for m in batch["meta"]]
        missing = [m.get("id") for m, w in zip(batch["meta"], words) if w is None]
        if missing:
            raise ValueError(
                f"no word timings for {missing[:3]}: the ttr stage reads a JSONL manifest whose "
                "lines have 'words': [[word, start, end], ...] (`l3se data word-times` estimates "
                "them for the starter corpus)"
            )
        return words

    def _parts(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        preds, targets = self.summarizer(batch["clean"], batch["lengths"], self.word_times(batch))
        parts = batch_parts(preds, targets)
        if parts is None:
            ids = [m.get("id") for m in batch["meta"]]
            raise ValueError(f"no word with a subword in the whole batch {ids[:3]}...")
        return parts

    def training_step(self, batch: dict, step: int) -> StepOutput:
        cos_dist, relation = self._parts(batch)
        loss = cos_dist + relation
        return StepOutput(loss=loss, logs={"loss": loss.detach(), "cos": 1.0 - cos_dist.detach(),
                                           "relation": relation.detach()})

    def validation_step(self, batch: dict) -> ValOutput:
        cos_dist, relation = self._parts(batch)
        return ValOutput(metrics={"loss": cos_dist + relation, "cos": 1.0 - cos_dist,
                                  "relation": relation}, audio={"clean": batch["clean"]})

    def export(self, path: Path) -> None:
        self.summarizer.save_pretrained(path)
