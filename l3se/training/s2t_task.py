"""The s2t stage: WavS2T learns clean speech -> transcript (frozen WavLM, frozen Qwen3)."""

from __future__ import annotations

from pathlib import Path

import torch

from l3se.models.s2t import WavS2T
from l3se.training.task import StepOutput, Task, ValOutput


class S2TTask(Task):
    """``decode_items``: validation items per batch decoded greedily for the WER."""

    def __init__(self, model: WavS2T, decode_items: int = 4):
        super().__init__()
        self.model = model
        self.decode_items = decode_items

    @staticmethod
    def transcripts(batch: dict) -> list[str]:
        texts = [m.get("text") for m in batch["meta"]]
        missing = [m.get("id") for m, t in zip(batch["meta"], texts) if t is None]
        if missing:
            raise ValueError(
                f"no transcript for {missing[:3]}: s2t needs whole utterances from a source with "
                "transcripts (set data.mix.segment_seconds: null; crops drop the text)"
            )
        return texts

    def training_step(self, batch: dict, step: int) -> StepOutput:
        loss = self.model(batch["clean"], batch["lengths"], self.transcripts(batch))
        return StepOutput(loss=loss, logs={"loss": loss.detach()})

    def validation_step(self, batch: dict) -> ValOutput:
        import jiwer

        texts = self.transcripts(batch)
        wav, lengths = batch["clean"], batch["lengths"]
        loss = self.model(wav, lengths, texts)
        n = self.decode_items
        refs = [self.model.normalize(t) for t in texts[:n]]
        # A hypothesis far longer than every reference is wrong already; an untrained model
        # that never says eos would otherwise decode max_text_tokens steps per validation.
        longest = max(len(t) for t in self.model.tokenize(refs))
        hyps = self.model.transcribe(wav[:n], lengths[:n], max_tokens=2 * longest + 4)
        pairs = [(r, h) for r, h in zip(refs, hyps) if r]
        metrics = {"loss": loss}
        if pairs:
            refs, hyps = zip(*pairs)
            metrics["wer"] = torch.tensor(jiwer.wer(list(refs), list(hyps)))
            metrics["cer"] = torch.tensor(jiwer.cer(list(refs), list(hyps)))
        return ValOutput(metrics=metrics, audio={"clean": wav})

    def log_extras(self) -> dict[str, float]:
        weights = self.model.mixture.weights.tolist()
        return {f"mixture/layer_{i:02d}": w for i, w in enumerate(weights)}

    def export(self, path: Path) -> None:
        self.model.save_pretrained(path)
