"""Fine-tune an enhancer model (the bundled default unless ``--base`` names another) on one's own
clean speech and noise recordings, in one command:

    l3se recipe finetune --speech my/clean --noise my/noise --out runs/finetune
    l3se enhance noisy.wav enhanced.wav --model runs/finetune/model

1. Manifests of both folders (``data_sim.manifest``: durations from the headers, sidecar
   ``.txt``/``.lab`` transcripts), each split into training files and a few held-out
   validation files, under ``OUT/data``.
2. The chosen stages, each from the base model's weights (``init_from``), on mixtures of the
   new speech and noise (``l3se train <stage>`` with the ``--config`` scale's settings):
       distill  the NI-Encoder, towards its own starting output on the clean speech
                (``loss.targets: self``): the base ships no WavS2T teacher, and the LM reads
                the encoder's output space, which this keeps
       lm       the SpeechLM, reading the fine-tuned encoder when distill ran
3. ``OUT/model``: the base model with the fine-tuned parts in place of its own, and a card
   saying what it was fine-tuned on and that nobody has measured it since.

Finished stages are reused and an interrupted one resumes, so running it again continues.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from data_sim.files import atomic_dir
from l3se.enhancer import DEFAULT_MODEL_DIR

# Stages that can be fine-tuned, in the order they run.
FINETUNE_STAGES = ("distill", "lm")
# Optimizer steps per stage by default. With the bundled tiny model and the tiny configs, 40-step
# runs took 0.5 s (distill) and 0.35 s (lm) per step, validation included, on 2 CPU cores beside
# another job (load 3): about 3 and 12 minutes.
DEFAULT_STEPS = {"distill": 300, "lm": 2000}
# Peak learning rate relative to the config's rate from scratch: the weights are already
# trained, and a from-scratch rate would first undo much of what they hold.
LR_SCALE = 0.1
# Held-out validation files: this share of a folder, at least 1 and at most MAX_VALID.
VALID_SHARE = 0.05
MAX_VALID = 50


@dataclass
class FinetuneConfig:
    speech: Path
    noise: Path
    out: Path
    base: Path = DEFAULT_MODEL_DIR
    stages: list[str] = field(default_factory=lambda: list(FINETUNE_STAGES))
    # Steps for every chosen stage; None: DEFAULT_STEPS.
    steps: int | None = None
    # Room impulse responses to reverberate the mixtures with; None: no reverberation.
    rir: Path | None = None
    # The stage configs (recipes/configs/<stage>/<config>.yaml) whose batch, crop length, mixing
    # and schedule shape apply; their models and data paths do not.
    config: str = "tiny"
    speaker_from_folder: bool = False
    seed: int = 0


def split(items: list, seed: int) -> tuple[list, list]:
    """(training, validation) items: a seeded random VALID_SHARE held out, at least one and at
    most MAX_VALID; a single item is used for both."""
    import numpy as np

    if len(items) < 2:
        return items, items
    n_valid = min(MAX_VALID, max(1, round(VALID_SHARE * len(items))))
    held = set(np.random.default_rng(seed).choice(len(items), n_valid, replace=False).tolist())
    return ([x for i, x in enumerate(items) if i not in held],
            [x for i, x in enumerate(items) if i in held])


def build_manifests(cfg: FinetuneConfig, log=print) -> dict[str, Path]:
    """``speech``/``noise`` x ``train``/``valid`` manifests under ``OUT/data``, by
    ``"<folder>.<split>"``; a folder's whole manifest is ``OUT/data/<folder>.jsonl``."""
    from data_sim.manifest import write_manifest
    from data_sim.sources import write_jsonl

    data = cfg.out / "data"
    paths = {}
    for kind, folder in (("speech", cfg.speech), ("noise", cfg.noise)):
        manifest = write_manifest(folder, data / f"{kind}.jsonl",
                                  cfg.speaker_from_folder and kind == "speech")
        log(f"[finetune] {kind}: {folder}: {manifest.summary()}")
        for name, items in zip(("train", "valid"), split(manifest.items, cfg.seed)):
            paths[f"{kind}.{name}"] = data / f"{kind}_{name}.jsonl"
            write_jsonl(items, paths[f"{kind}.{name}"])
    return paths


def stage_overrides(stage: str, cfg: FinetuneConfig, manifests: dict[str, Path]) -> list[str]:
    """``key=value`` overrides that start ``stage`` from the base model on the user's data."""
    from l3se.config import load_config, to_dict
    from l3se.enhancer import read_config
    from recipes.stages import STAGES, resolve_config, schedule_overrides

    stage_cfg = load_config(STAGES[stage].config_class,
                            resolve_config(STAGES[stage].folder, cfg.config))
    out = [
        *schedule_overrides(cfg.steps or DEFAULT_STEPS[stage]),
        f"optim.lr={stage_cfg.optim.lr * LR_SCALE}",
        f"train.seed={cfg.seed}",
        f"codec={cfg.base / 'codec'}",
    ]
    for section, split_name in (("data", "train"), ("valid", "valid")):
        out += [
            f"{section}.speech={manifests[f'speech.{split_name}']}",
            f"{section}.noise={manifests[f'noise.{split_name}']}",
        ]
        out += ([f"{section}.rir={cfg.rir}"] if cfg.rir
                else [f"{section}.rir=null", f"{section}.mix.p_reverb=0"])
    if stage == "distill":
        return [*out, f"init_from={cfg.base / 'ni_encoder'}", "loss.targets=self", "s2t=null"]
    encoder = (cfg.out / "distill" / "model" if "distill" in cfg.stages
               else cfg.base / "ni_encoder")
    # The base model's inference settings travel with it (JSON is YAML).
    enhancer = json.dumps(to_dict(read_config(cfg.base)))
    return [*out, f"init_from={cfg.base / 'lm'}", f"ni_encoder={encoder}",
            f"enhancer={enhancer}"]


def assemble(cfg: FinetuneConfig, speech_manifest: Path) -> Path:
    """``OUT/model``: the base model's parts with the fine-tuned ones in their place, written
    beside it and renamed into place, so an interrupted run never leaves half a model."""
    from data_sim.sources import read_jsonl
    from l3se.card import write_card
    from l3se.enhancer import CONFIG_FILE, PARTS

    sources = {part: cfg.base / part for part in PARTS}
    settings = cfg.base / CONFIG_FILE
    if "distill" in cfg.stages:
        sources["ni_encoder"] = cfg.out / "distill" / "model"
    if "lm" in cfg.stages:
        sources["lm"] = cfg.out / "lm" / "model" / "lm"
        settings = cfg.out / "lm" / "model" / CONFIG_FILE
    model = cfg.out / "model"
    with atomic_dir(model) as staged:
        for part, source in sources.items():
            shutil.copytree(source, staged / part)
        shutil.copy2(settings, staged / CONFIG_FILE)
        write_card(finetuned_card(cfg, read_jsonl(speech_manifest)), staged)
    return model


def finetuned_card(cfg: FinetuneConfig, speech: list):
    """The base model's card with the fine-tuning added and its measurements dropped."""
    from l3se.card import ModelCard, read_card

    base = read_card(cfg.base)
    hours = sum(item.duration or 0.0 for item in speech) / 3600
    done = ", ".join(cfg.stages)
    tuned = (f"fine-tuned ({done}) on {len(speech)} recordings ({hours:.2f} h) from "
             f"{cfg.speech} mixed with noise from {cfg.noise} (l3se recipe finetune)")
    steps = {f"{s} (fine-tune)": cfg.steps or DEFAULT_STEPS[s] for s in cfg.stages}
    warning = ("not evaluated since fine-tuning: the base model's measurements no longer "
               "apply; compare it with the base on held-out recordings (`l3se evaluate`) "
               "before trusting it.")
    if base is not None and base.warning:
        warning += f" The base model's warning: {base.warning}"
    return ModelCard(
        name=f"{base.name if base else cfg.base.name}, fine-tuned on {cfg.speech.name}",
        trained_on=f"{base.trained_on}; then {tuned}" if base else tuned,
        steps={**(base.steps if base else {}), **steps},
        warning=warning,
        domain=f"{base.short_domain() + ' + ' if base else ''}{cfg.speech.name} recordings",
        headline="not evaluated since fine-tuning",
    )


def run(cfg: FinetuneConfig, log=print) -> Path:
    """Manifests, the chosen stages, ``OUT/model`` (see the module docstring); returns the
    model directory."""
    from l3se.enhancer import check_model_dir
    from recipes.stages import train_or_reuse

    check_model_dir(cfg.base)
    manifests = build_manifests(cfg, log)
    for stage in FINETUNE_STAGES:
        if stage in cfg.stages:
            train_or_reuse(stage, cfg.config, stage_overrides(stage, cfg, manifests),
                           cfg.out / stage, log, "finetune")
    model = assemble(cfg, cfg.out / "data" / "speech.jsonl")
    log(f"[finetune] model: {model} (l3se enhance IN OUT --model {model})")
    return model
