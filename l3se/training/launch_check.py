"""What a training launch holds and does, worked out without data, weights or the hub
(``l3se train STAGE --check``): configs made buildable offline, and the summary of a task
built on the meta device.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from l3se.config import ConfigError
from l3se.models.asr_loss import PAPER_WHISPER, WHISPER_TINY, ASRLossConfig
from l3se.models.llm import PAPER_QWEN3, QWEN3_0_6B, LLMConfig
from l3se.models.s2t import WavS2TConfig
from l3se.models.ssl import PAPER_WAVLM, WAVLM_LARGE, SSLConfig
from l3se.models.ttr import BERT_BASE, PAPER_BERT, TextVectorConfig
from l3se.training.distributed import BUCKET_ELEMENTS
from l3se.training.optim import assign_groups
from l3se.training.options import OptimConfig, RecipeConfig
from l3se.training.task import Task

STORED_ARCHITECTURES = {PAPER_WAVLM: WAVLM_LARGE, PAPER_QWEN3: QWEN3_0_6B,
                        PAPER_WHISPER: WHISPER_TINY, PAPER_BERT: BERT_BASE}
# len(AutoTokenizer.from_pretrained("Qwen/Qwen3-0.6B")): the CTC head's classes at paper scale.
QWEN3_TOKENIZER_SIZE = 151669
# Bytes per trainable parameter, in its own dtype's units: weights, gradients, AdamW's two
# moments, and the temporary that torch's foreach AdamW allocates for the update.
TRAINABLE_COPIES = 5


def stored_architecture(name: str) -> dict[str, Any]:
    """The architecture of a hub model the recipes name, from the copy stored in l3se (or from a
    local transformers folder's config.json)."""
    if name in STORED_ARCHITECTURES:
        return dict(STORED_ARCHITECTURES[name])
    config = Path(name) / "config.json"
    if config.is_file():
        return json.loads(config.read_text())
    known = ", ".join(STORED_ARCHITECTURES)
    raise ConfigError(f"pretrained {name!r}: no stored architecture (known: {known}) and no "
                      "local folder with a config.json")


def offline(cfg: Any) -> Any:
    """``cfg`` (any config dataclass) with every hub-named model (WavLM, Qwen3, BERT, Whisper)
    replaced by its stored architecture (random weights), so that it builds without the hub; a
    WavS2T's vocabulary size is filled in where only the hub's tokenizer or LLM would tell it."""
    if not dataclasses.is_dataclass(cfg):
        return cfg
    changes = {
        f.name: offline(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if dataclasses.is_dataclass(getattr(cfg, f.name))
    }
    if isinstance(cfg, WavS2TConfig) and cfg.vocab_size is None:
        if cfg.objective == "ntp" and cfg.llm.pretrained:
            # A pretrained text LLM keeps its own vocabulary.
            changes["vocab_size"] = stored_architecture(cfg.llm.pretrained)["vocab_size"]
        elif cfg.tokenizer == PAPER_QWEN3:
            changes["vocab_size"] = QWEN3_TOKENIZER_SIZE
    if isinstance(cfg, (SSLConfig, LLMConfig, TextVectorConfig)) and cfg.pretrained:
        changes.update(pretrained=None, arch=stored_architecture(cfg.pretrained))
    if isinstance(cfg, ASRLossConfig) and cfg.judge == "whisper" and cfg.whisper_arch is None:
        changes["whisper_arch"] = stored_architecture(cfg.whisper)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _count(params: list[nn.Parameter]) -> tuple[int, int, str]:
    """(parameters, bytes, dtypes) of ``params``."""
    n = sum(p.numel() for p in params)
    size = sum(p.numel() * p.element_size() for p in params)
    dtypes = "/".join(sorted({str(p.dtype).removeprefix("torch.") for p in params})) or "-"
    return n, size, dtypes


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M"


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def _schedule(name: str, o: OptimConfig, updates: int, first: int = 0) -> str:
    """One network's optimizers and schedule, over its ``updates`` updates from step
    ``first``."""
    kind = {"adamw": f"AdamW (betas {tuple(o.betas)})", "sgd": f"SGD (momentum {o.momentum:g})"}
    start = f" from step {first} (its first update)" if first else ""
    lines = [f"{name}: {kind[o.optimizer]}, linear warmup over {o.warmup_steps} updates{start} "
             f"to lr {o.lr:g}, cosine to min_lr {o.min_lr:g} at its update {updates} (weight "
             f"decay {o.weight_decay:g}, grad clip {o.grad_clip})"]
    for g in o.groups:
        settings = {k: getattr(g, k) for k in ("optimizer", "lr", "min_lr", "weight_decay")
                    if getattr(g, k) is not None}
        lines.append(f"  group {', '.join(g.params)}: " +
                     ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in settings.items()))
    return "\n".join(lines)


def describe_launch(task: Task, cfg: RecipeConfig, world_sizes: Sequence[int]) -> list[str]:
    """Schedule, parameters, a model-state memory estimate per process, and the batch and data
    of a launch on each of ``world_sizes`` processes, for ``task`` (built on any device, meta
    included) trained with ``cfg``. Raises ConfigError for a batch that cannot run."""
    train = cfg.train
    warmup = task.generator_warmup
    names = {id(p): n for n, p in task.named_parameters()}
    # A group that names no parameter is a typo that would otherwise surface at launch.
    assign_groups(cfg.optim, [(names[id(p)], p) for p in task.generator_parameters()], "optim")
    lines = [_schedule("schedule", cfg.optim, train.max_steps - warmup, warmup)]
    if cfg.optim_d is not None:
        lines.append(_schedule("discriminator schedule", cfg.optim_d, train.max_steps))
    compute = {"auto": "auto (bf16 autocast on CUDA, fp32 on CPU)", "bf16": "bf16 autocast",
               "fp32": "fp32"}[train.precision]
    lines.append(f"precision: {compute}; weights, gradients and AdamW states keep the "
                 "parameters' dtype")

    params = list(task.parameters())
    trainable = [p for p in params if p.requires_grad]
    frozen = [p for p in params if not p.requires_grad]
    n_train, train_bytes, train_dtypes = _count(trainable)
    n_frozen, frozen_bytes, frozen_dtypes = _count(frozen)
    lines.append(f"parameters: {_millions(n_train)} trainable ({train_dtypes}), "
                 f"{_millions(n_frozen)} frozen ({frozen_dtypes})")
    for name, module in task.named_children():
        mine = list(module.parameters())
        if mine:
            n_t = sum(p.numel() for p in mine if p.requires_grad)
            n_f = sum(p.numel() for p in mine if not p.requires_grad)
            lines.append(f"  {name:<14} {_millions(n_t):>9} trainable {_millions(n_f):>9} frozen")
    if not trainable:
        lines.append("nothing to train: the stage exports its model as built, without data")
    buffers = sum(b.numel() * b.element_size() for b in task.buffers())
    total = TRAINABLE_COPIES * train_bytes + frozen_bytes + buffers
    # The gradient all-reduce's flat bucket (fp32 gradients), on more than one process.
    bucket = 4 * min(BUCKET_ELEMENTS, n_train)
    lines.append(
        f"memory per process: {_size(total)} of model state (+{_size(bucket)} all-reduce bucket "
        f"on 2+ processes) = trainable {_size(TRAINABLE_COPIES * train_bytes)} (weights, "
        "gradients, AdamW's two moments and its update temporary) + frozen weights "
        f"{_size(frozen_bytes)} + buffers {_size(buffers)}; activations and autocast's bf16 "
        "weight copies are not included"
    )
    crop = cfg.data.mix.segment_seconds
    for world in world_sizes:
        examples = train.global_batch(world) * train.max_steps
        hours = examples * crop / 3600 if crop is not None else 0.0
        audio = (f"at most {hours:,.{0 if hours >= 10 else 1}f} h of audio in crops of up to "
                 f"{crop:g} s" if crop is not None else "whole utterances")
        lines.append(f"on {world}: {train.batch_summary(world)}; {train.max_steps} steps see "
                     f"{examples:,} examples ({audio})")
    return lines
