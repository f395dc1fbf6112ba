"""The distill stage: NI-Encoder trained on simulated noisy speech towards the frozen clean-speech
teacher encoders (WavCodec from codec-2, WavS2T from s2t); paper section 3.2, Table 3.

    l3se train distill --config tiny
    torchrun --nproc_per_node 8 recipes/train_distill.py distill --config paper
    l3se train distill --config paper_acoustic_only      # Table 3 (b); likewise paper_fixed_layers
                                                         # (d), paper_ctc (e), paper_no_distill (a)

Named configs are ``recipes/configs/distill/<name>.yaml``. Each run writes
``<train.output_dir>/{config.yaml, checkpoints/, tb/, model/}``; ``model/`` is an
``NIEncoder.from_pretrained`` directory with ``layer_weights.png`` (Figure 4).

``loss.targets: none`` (Table 3 (a), no distillation) trains nothing: the stage writes the
teacher-initialised encoder (WavCodec's encoder, plus WavS2T's when ``s2t`` is set) straight to
``model/``, so the lm stage conditions on the undistilled teachers applied to noisy speech.

``init_from`` starts the student from an exported NI-Encoder instead (fine-tuning); with
``loss.targets: self`` its own starting weights on clean speech are the targets, so neither
teacher is needed (``l3se recipe finetune`` fine-tunes the bundled model's encoder this way).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

from l3se.config import ConfigError
from l3se.models.ni_encoder import NIEncoderConfig
from l3se.training.distill_task import DistillLossConfig
from l3se.training.options import RecipeConfig
from recipes.stages import Loader, load_upstream, main


@dataclass
class DistillRecipeConfig(RecipeConfig):
    # The acoustic teacher: codec-2's exported model directory.
    codec: str = "runs/codec2-paper/model"
    # The semantic teacher: the s2t stage's exported model; null for acoustic-only runs.
    s2t: str | None = "runs/s2t-paper/model"
    # null: the teachers' architecture (and weights) for the student.
    student: NIEncoderConfig | None = None
    # An exported NI-Encoder to start the student from instead (fine-tuning): a distill run's
    # model, or an enhancer model's ni_encoder/ such as l3se/pretrained/default/ni_encoder.
    init_from: str | None = None
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)


def build_task(stage: str, cfg: DistillRecipeConfig, load: Loader = load_upstream):
    from l3se.models.codec import WavCodec
    from l3se.models.ni_encoder import NIEncoder
    from l3se.models.s2t import WavS2T
    from l3se.training.distill_task import DistillTask

    for key, data in cfg.data_sections().items():
        if not (data.noise and data.mix.p_noise > 0):
            raise ConfigError(f"{key}: the student learns from noisy speech; set {key}.noise "
                              f"and {key}.mix.p_noise > 0")
    targets = cfg.loss.targets
    if cfg.init_from is not None and cfg.student is not None:
        raise ConfigError("set at most one of 'student' (a new architecture) and 'init_from'")
    if targets == "self":
        if cfg.init_from is None:
            raise ConfigError("loss.targets 'self' distils towards the encoder the student "
                              "starts from: set init_from")
        student = load(stage, cfg, "init_from", NIEncoder)
        return DistillTask(student, copy.deepcopy(student), cfg.loss)
    if targets == "teachers" and cfg.s2t is None:
        raise ConfigError("loss.targets 'teachers' distils WavS2T too: set s2t")
    if targets == "acoustic" and cfg.s2t is not None:
        raise ConfigError("loss.targets 'acoustic' uses no semantic teacher: set s2t to null")
    codec = load(stage, cfg, "codec", WavCodec)
    s2t = None
    if cfg.s2t is not None:
        s2t = load(stage, cfg, "s2t", WavS2T)
    semantic = targets != "acoustic" and (s2t is not None or targets == "fixed_layers")
    if targets == "fixed_layers" and s2t is None and cfg.student is None:
        raise ConfigError("fixed_layers needs a semantic head: set s2t (to copy) or student")
    try:
        if cfg.init_from is not None:
            student = load(stage, cfg, "init_from", NIEncoder)
        else:
            student = NIEncoder.from_teachers(codec, s2t, semantic=semantic, cfg=cfg.student)
        teacher = NIEncoder.from_teachers(codec, s2t, semantic=targets == "teachers")
        task = DistillTask(student, teacher, cfg.loss)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if targets == "none":
        # Nothing to learn: the engine exports the teacher-initialised student as it is.
        student.requires_grad_(False)
    return task


if __name__ == "__main__":
    sys.exit(main())
