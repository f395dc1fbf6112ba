"""WavCodec training: codec-1 (generator only: multi-scale mel + codebook + commitment) and
codec-2 (adds DAC's discriminators; starts from codec-1's exported model).

    l3se train codec-1 --config tiny
    l3se train codec-2 --config tiny train.max_steps=200
    torchrun --nproc_per_node 8 recipes/train_codec.py codec-1 --config paper

Named configs are ``recipes/configs/codec1/<name>.yaml`` and ``recipes/configs/codec2/<name>.yaml``.
Each run writes ``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}``; ``model/`` is a
``WavCodec.from_pretrained`` directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from l3se.config import ConfigError
from l3se.models.codec import WavCodecConfig
from l3se.models.discriminators import DiscriminatorConfig
from l3se.models.losses import CodecLossConfig
from l3se.training.options import RecipeConfig
from recipes.stages import load_upstream, main


@dataclass
class CodecRecipeConfig(RecipeConfig):
    # Architecture of a codec trained from scratch (codec-1) ...
    model: WavCodecConfig | None = None
    # ... or the exported model directory to start from (codec-2: codec-1's output_dir/model).
    init_from: str | None = None
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    # codec-2 only, with optim_d.
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


def build_task(stage: str, cfg: CodecRecipeConfig):
    from l3se.models.codec import WavCodec
    from l3se.models.discriminators import Discriminator
    from l3se.training.codec_task import CodecTask

    for key, data in cfg.data_sections().items():
        if data.mix.p_noise > 0 or data.mix.p_reverb > 0:
            raise ConfigError(f"{key}.mix: the codec learns clean -> clean; set p_noise and "
                              "p_reverb to 0")
    if (cfg.model is None) == (cfg.init_from is None):
        raise ConfigError("set exactly one of 'model' (train from scratch) and 'init_from'")
    if cfg.init_from is not None:
        codec = load_upstream(stage, cfg, "init_from", WavCodec)
    else:
        codec = WavCodec(cfg.model)
    disc = Discriminator(cfg.discriminator, codec.sample_rate) if stage == "codec-2" else None
    return CodecTask(codec, cfg.loss, disc)


if __name__ == "__main__":
    sys.exit(main())
