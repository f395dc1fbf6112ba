"""The lm stage: fine-tune Qwen3 (+ prefix adapters + audio vocabulary) to predict clean WavCodec
tokens from the frozen NI-Encoder's view of noisy speech; exports the enhancer model directory.

    l3se train lm --config tiny
    torchrun --nproc_per_node 8 recipes/train_lm.py lm --config paper

Named configs are ``recipes/configs/lm/<name>.yaml``. Each run writes
``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}``; ``model/`` is an enhancer model
directory (``enhancer.yaml`` + ``ni_encoder/``, ``lm/``, ``codec/``).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from l3se.config import ConfigError
from l3se.enhancer import EnhancerConfig
from l3se.models.lm import SpeechLMConfig
from l3se.training.options import RecipeConfig
from recipes.stages import Loader, load_upstream, main


@dataclass
class LMRecipeConfig(RecipeConfig):
    # Exported model directories of the earlier stages.
    ni_encoder: str = "runs/distill-paper/model"
    codec: str = "runs/codec2-paper/model"
    # acoustic_dim / semantic_dim null: taken from the loaded NI-Encoder.
    lm: SpeechLMConfig = field(default_factory=SpeechLMConfig)
    # An exported SpeechLM to start from instead of random weights (fine-tuning): an lm run's
    # model/lm, or an enhancer model's lm/ such as l3se/pretrained/default/lm. It brings its
    # own architecture, so the lm section above is not used.
    init_from: str | None = None
    # Start the audio vocabulary from the one `codec` was trained with (a codec-3 model trained
    # with llm_codec and the same LLM), as the seed's speech LM does, instead of at random.
    audio_vocab_from_codec: bool = False
    # Inference settings written into the exported model directory (and used by validation's
    # decode): what `l3se enhance` and the app use unless told otherwise.
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)


def lm_config(cfg: SpeechLMConfig, ni_encoder, codec) -> SpeechLMConfig:
    """``cfg`` with the feature sizes of ``ni_encoder`` filled in, checked against both parts."""
    if cfg.prefix == "acoustic+semantic" and ni_encoder.semantic_dim is None:
        raise ConfigError(
            "lm.prefix 'acoustic+semantic' needs an NI-Encoder with a semantic head; this one is "
            "acoustic-only (set lm.prefix=acoustic or distill with semantic targets)"
        )
    filled = dataclasses.replace(
        cfg,
        acoustic_dim=cfg.acoustic_dim or ni_encoder.acoustic_dim,
        semantic_dim=cfg.semantic_dim or ni_encoder.semantic_dim,
    )
    checks = [
        ("lm.acoustic_dim", filled.acoustic_dim, ni_encoder.acoustic_dim, "the NI-Encoder"),
        ("lm.n_codebooks", filled.n_codebooks, codec.cfg.n_codebooks, "the codec"),
        ("lm.codebook_size", filled.codebook_size, codec.cfg.codebook_size, "the codec"),
    ]
    if cfg.prefix == "acoustic+semantic":
        checks.append(
            ("lm.semantic_dim", filled.semantic_dim, ni_encoder.semantic_dim, "the NI-Encoder")
        )
    if ni_encoder.frame_length != codec.frame_length:
        raise ConfigError(
            f"the NI-Encoder's frames are {ni_encoder.frame_length} samples, the codec's "
            f"{codec.frame_length}: the prefix and the tokens must share one frame rate"
        )
    for key, mine, theirs, part in checks:
        if mine != theirs:
            raise ConfigError(f"{key} is {mine} but {part} has {theirs}: set it to {theirs}")
    return filled


def build_task(stage: str, cfg: LMRecipeConfig, load: Loader = load_upstream):
    from l3se.models.codec import WavCodec
    from l3se.models.lm import SpeechLM
    from l3se.models.ni_encoder import NIEncoder
    from l3se.training.lm_task import LMTask

    ni_encoder = load(stage, cfg, "ni_encoder", NIEncoder)
    codec = load(stage, cfg, "codec", WavCodec)
    if cfg.init_from is not None:
        if cfg.audio_vocab_from_codec:
            raise ConfigError("audio_vocab_from_codec would overwrite init_from's audio "
                              "vocabulary: set one of them")
        lm = load(stage, cfg, "init_from", SpeechLM)
        try:
            lm_config(lm.cfg, ni_encoder, codec)
        except ConfigError as e:
            raise ConfigError(f"init_from: {cfg.init_from} does not fit ni_encoder and codec "
                              f"({e})") from None
    else:
        lm = SpeechLM(lm_config(cfg.lm, ni_encoder, codec))
    if cfg.audio_vocab_from_codec:
        from l3se.models.llm_codec import read_audio_vocab

        try:
            lm.load_audio_vocabulary(*read_audio_vocab(cfg.codec))
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"audio_vocab_from_codec: {e}") from None
    # The exported model chunks long inputs to the length its LM was trained on.
    enhancer = dataclasses.replace(cfg.enhancer, trained_seconds=cfg.data.mix.segment_seconds)
    return LMTask(lm, ni_encoder, codec, enhancer)


if __name__ == "__main__":
    sys.exit(main())
