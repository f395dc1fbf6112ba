"""Summariser pretraining for the Timed-Text Regularizer (the ttr stage, seeds 000/001): clean
speech with word timings -> one vector per subword, regressed onto a frozen text encoder's
(BERT's) vectors of the same subwords. codec-3's ``TTRLoss`` then scores decoded speech with it.

    l3se train ttr --config tiny
    torchrun --nproc_per_node 8 recipes/train_ttr.py ttr --config paper

Named configs are ``recipes/configs/ttr/<name>.yaml``. Each run writes
``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}`` (plus ``tokenizer/`` when built
from the data); ``model/`` is a ``Summarizer.from_pretrained`` directory.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from l3se.models.ttr import SummarizerConfig
from recipes.stages import Loader, load_upstream, main
from recipes.train_s2t import ReadsCodecWavLM, build_reader


@dataclass
class TTRRecipeConfig(ReadsCodecWavLM):
    # backbone_from: codec-2's model, the WavLM codec-3 fine-tunes against; tokenizer_from_data:
    # the offline random text encoder's tokenizer.
    model: SummarizerConfig = field(default_factory=SummarizerConfig)


def build_task(stage: str, cfg: TTRRecipeConfig, load: Loader = load_upstream):
    from l3se.models.ttr import Summarizer
    from l3se.training.ttr_task import TTRTask

    def build(tokenizer: str | None) -> Summarizer:
        model_cfg = cfg.model
        if tokenizer is not None:
            text = dataclasses.replace(model_cfg.text, tokenizer=tokenizer)
            model_cfg = dataclasses.replace(model_cfg, text=text)
        return Summarizer(model_cfg)

    return TTRTask(build_reader(stage, cfg, build, load))


if __name__ == "__main__":
    sys.exit(main())
