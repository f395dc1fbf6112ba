"""WavCodec training: codec-1 (generator only: multi-scale mel + codebook + commitment),
codec-2 (adds DAC's discriminators; starts from codec-1's exported model) and codec-3 (fine-tunes
codec-2's model with objectives scored by a language model: the ASR-consistency loss and the
Timed-Text Regularizer of seeds 000/001, the LLM-Codec objectives of seeds 003/004).

    l3se train codec-1 --config tiny
    l3se train codec-2 --config tiny train.max_steps=200
    l3se train codec-3 --config tiny_asr
    torchrun --nproc_per_node 8 recipes/train_codec.py codec-1 --config paper

Named configs are ``recipes/configs/codec{1,2,3}/<name>.yaml``.
Each run writes ``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}``; ``model/`` is a
``WavCodec.from_pretrained`` directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from l3se.config import ConfigError
from l3se.models.asr_loss import ASRLossConfig
from l3se.models.codec import WavCodecConfig
from l3se.models.discriminators import DiscriminatorConfig
from l3se.models.llm_codec import LLMCodecConfig
from l3se.models.losses import CodecLossConfig
from l3se.models.ttr import TTRLossConfig
from l3se.training.options import RecipeConfig
from recipes.stages import Loader, load_upstream, main


@dataclass
class CodecRecipeConfig(RecipeConfig):
    # Architecture of a codec trained from scratch (codec-1) ...
    model: WavCodecConfig | None = None
    # ... or the exported model directory to start from (codec-2: codec-1's output_dir/model).
    init_from: str | None = None
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    # codec-2 and codec-3, with optim_d; codec-3 may set it null to fine-tune without the GAN.
    discriminator: DiscriminatorConfig | None = field(default_factory=DiscriminatorConfig)
    # codec-3 only. The codec parts that train (of mixture, encoder, quantizer, decoder; null:
    # all of them); WavLM stays frozen.
    train_parts: list[str] | None = None
    # Steps at the start that train only the discriminator, a fresh one next to a generator
    # that is already trained (codec-2 from codec-1's model; codec-3, since codec-2 exports no
    # discriminator).
    generator_warmup: int = 0
    # An entry of a codebook that none of this many consecutive training frames (all processes)
    # picked is moved onto a frame of the batch (0: never). At 12.5 Hz a small batch holds fewer
    # frames than a codebook has entries: without restarts the tiny codec-1 collapsed onto 1-2
    # entries per codebook within 40 steps. Counted in frames, not steps, so that a stage with
    # shorter crops does not restart entries that are merely rare: codec-2's 4 x 0.5 s crops with
    # a 25-step window replaced 70% of every codebook of a trained codec within 200 steps.
    dead_code_frames: int = 0
    # The extra objectives (null: off).
    asr: ASRLossConfig | None = None
    # The ASR judge when asr.judge is s2t: stage s2t's exported model.
    judge_from: str | None = None
    ttr: TTRLossConfig | None = None
    # The TTR summariser: stage ttr's exported model.
    summarizer_from: str | None = None
    llm_codec: LLMCodecConfig | None = None

    def objective_fields(self) -> dict[str, object]:
        """The codec-3 options that are set, by config key."""
        fields = {"train_parts": self.train_parts, "asr": self.asr, "ttr": self.ttr, "llm_codec": self.llm_codec}
        return {k: v for k, v in fields.items() if v is not None}


def build_task(stage: str, cfg: CodecRecipeConfig, load: Loader = load_upstream):
    from l3se.models.codec import WavCodec
    from l3se.models.discriminators import Discriminator
    from l3se.training.codec_task import CodecTask

    for key, data in cfg.data_sections().items():
        if data.mix.p_noise > 0 or data.mix.p_reverb > 0:
            raise ConfigError(f"{key}.mix: the codec learns clean -> clean; set p_noise and "
                              "p_reverb to 0")
    if (cfg.model is None) == (cfg.init_from is None):
        raise ConfigError("set exactly one of 'model' (train from scratch) and 'init_from'")
    if stage != "codec-3" and cfg.objective_fields():
        raise ConfigError(f"{', '.join(cfg.objective_fields())}: codec-3 options (this is "
                          f"{stage})")
    if cfg.init_from is not None:
        codec = load(stage, cfg, "init_from", WavCodec)
    else:
        codec = WavCodec(cfg.model)
    if stage == "codec-2" and cfg.discriminator is None:
        raise ConfigError("discriminator: codec-2 is the stage that trains it; it cannot be null")
    gan = stage != "codec-1" and cfg.discriminator is not None
    disc = Discriminator(cfg.discriminator, codec.sample_rate) if gan else None
    objectives = build_objectives(stage, cfg, codec, load)
    try:
        return CodecTask(codec, cfg.loss, disc, objectives, cfg.train_parts, cfg.generator_warmup,
                         cfg.dead_code_frames)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_objectives(stage: str, cfg: CodecRecipeConfig, codec, load: Loader) -> list:
    """codec-3's extra objectives, their frozen judges loaded from earlier stages or the hub."""
    objectives = []
    if cfg.asr is not None:
        from l3se.models.asr_loss import build_asr_loss
        from l3se.models.s2t import WavS2T

        judge = None
        if cfg.asr.judge == "s2t":
            if cfg.judge_from is None:
                raise ConfigError("asr.judge s2t: set judge_from to stage s2t's model")
            judge = load(stage, cfg, "judge_from", WavS2T)
        objectives.append(build_asr_loss(cfg.asr, judge))
    if cfg.ttr is not None:
        from l3se.models.ttr import Summarizer, TTRLoss

        if cfg.summarizer_from is None:
            raise ConfigError("ttr: set summarizer_from to stage ttr's model")
        objectives.append(TTRLoss(cfg.ttr, load(stage, cfg, "summarizer_from", Summarizer)))
    if cfg.llm_codec is not None:
        from l3se.models.llm_codec import LLMCodecObjective

        c = codec.cfg
        objectives.append(LLMCodecObjective(cfg.llm_codec, c.dim, c.n_codebooks, c.codebook_size,
                                             codec.frame_length))
    return objectives


if __name__ == "__main__":
    sys.exit(main())
