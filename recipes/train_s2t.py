"""WavS2T training (the s2t stage): the semantic teacher learns clean speech -> transcript through
a frozen text LLM (next-token prediction, the paper) or a CTC head (Table 3 (e) ablation), on
top of the WavLM backbone it shares with WavCodec.

    l3se train s2t --config tiny
    l3se train s2t --config tiny_ctc
    torchrun --nproc_per_node 8 recipes/train_s2t.py s2t --config paper

Named configs are ``recipes/configs/s2t/<name>.yaml``. Each run writes
``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}`` (plus ``tokenizer/`` when built
from the data); ``model/`` is a ``WavS2T.from_pretrained`` directory.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from l3se.config import ConfigError
from l3se.models.s2t import WavS2TConfig
from l3se.training.options import RecipeConfig
from recipes.stages import Loader, load_upstream, main

if TYPE_CHECKING:
    from torch import nn


@dataclass
class ReadsCodecWavLM(RecipeConfig):
    """What s2t and ttr share: they read codec-2's WavLM, and offline they train their own
    tokenizer (there is no Qwen3 or BERT tokenizer without the hub)."""

    # The WavCodec model directory whose WavLM this stage reads (codec-2's output_dir/model);
    # null keeps model.ssl as built.
    backbone_from: str | None = None
    # Train a small tokenizer on data.speech's transcripts into output_dir/tokenizer (reused
    # when there) and use it instead of the model's: the offline runs have no hub.
    tokenizer_from_data: bool = False
    tokenizer_vocab_size: int = 512


@dataclass
class S2TRecipeConfig(ReadsCodecWavLM):
    model: WavS2TConfig = field(default_factory=WavS2TConfig)


def check_data(cfg: S2TRecipeConfig) -> None:
    for key, data in cfg.data_sections().items():
        if data.mix.segment_seconds is not None:
            raise ConfigError(
                f"{key}.mix.segment_seconds: s2t needs whole utterances with their "
                "transcripts; set it to null"
            )
        if data.mix.p_noise > 0 or data.mix.p_reverb > 0:
            raise ConfigError(
                f"{key}.mix: the semantic teacher learns from clean speech; set p_noise and "
                "p_reverb to 0"
            )


def data_tokenizer(cfg: ReadsCodecWavLM, vocab_size: int) -> str:
    """The tokenizer folder in output_dir, trained (to at most ``vocab_size`` entries) from
    ``data.speech``'s transcripts if missing; s2t's and ttr's offline text models read it. Every rank builds the same one in a temporary folder and the first rename wins, so
    no rank reads a half-written folder."""
    from data_sim.sources import load_source
    from l3se.models.tokenizer import build_tokenizer

    out = Path(cfg.train.output_dir) / "tokenizer"
    if out.is_dir():
        return str(out)
    texts = [item.text for item in load_source(cfg.data.speech) if item.text]
    if not texts:
        raise ConfigError(f"tokenizer_from_data: {cfg.data.speech} holds no transcripts")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=out.parent))
    try:
        build_tokenizer(texts, tmp, vocab_size)
        os.rename(tmp, out)
    except OSError:
        if not out.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def build_task(stage: str, cfg: S2TRecipeConfig, load: Loader = load_upstream):
    from l3se.models.s2t import WavS2T
    from l3se.training.s2t_task import S2TTask

    check_data(cfg)

    def build(tokenizer: str | None) -> WavS2T:
        model_cfg = cfg.model if tokenizer is None else dataclasses.replace(cfg.model,
                                                                            tokenizer=tokenizer)
        return WavS2T(model_cfg)

    return S2TTask(build_reader(stage, cfg, build, load))


def build_reader(stage: str, cfg: ReadsCodecWavLM, build: Callable[[str | None], nn.Module],
                 load: Loader):
    """``build(tokenizer folder or None)``'s model with codec-2's WavLM copied in
    (``backbone_from``)."""
    from l3se.models.codec import WavCodec

    backbone = None
    if cfg.backbone_from is not None:
        backbone = load(stage, cfg, "backbone_from", WavCodec)
        # The front end holds no weights to copy, so it can only be the codec's own.
        cfg.model.ssl.frontend = backbone.cfg.ssl.frontend
    model = build(data_tokenizer(cfg, cfg.tokenizer_vocab_size) if cfg.tokenizer_from_data
                  else None)
    if backbone is not None:
        try:
            model.load_backbone_from(backbone)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"backbone_from: {e}") from None
    return model


if __name__ == "__main__":
    sys.exit(main())
