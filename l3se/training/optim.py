"""The optimizers of one network (generator or discriminator) and their learning-rate schedule.

A network's parameters are split into ``OptimConfig.groups`` (by parameter name) and the rest;
each group takes its own optimizer type, peak and floor rate and weight decay, and one torch
optimizer per type holds them. The schedule counts the network's own updates: a network whose
updates start late (the generator after a discriminator-only warm-up) still warms up from its
first update and decays over the updates it will make, not over the run's steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from l3se.config import ConfigError
from l3se.training.options import OptimConfig, ParamGroupConfig
from l3se.training.schedule import warmup_cosine


@dataclass
class Network:
    """One network's parameters, optimizers (by checkpoint name) and, per optimizer, each
    param group's (peak, floor) rate."""

    name: str
    cfg: OptimConfig
    params: list[nn.Parameter]
    optimizers: dict[str, torch.optim.Optimizer]
    rates: dict[str, list[tuple[float, float]]]
    # Updates this network makes over the whole run: the cosine ends there.
    total_updates: int

    def set_lr(self, updates: int) -> float:
        """Set every group's rate after ``updates`` updates of this network; returns the rate of
        the network's own (ungrouped) parameters."""
        c = self.cfg
        for key, opt in self.optimizers.items():
            for group, (peak, floor) in zip(opt.param_groups, self.rates[key]):
                group["lr"] = warmup_cosine(updates, peak, floor, c.warmup_steps,
                                            self.total_updates)
        return warmup_cosine(updates, c.lr, c.min_lr, c.warmup_steps, self.total_updates)


def build_network(
    name: str, cfg: OptimConfig, named: list[tuple[str, nn.Parameter]], total_updates: int,
    where: str = "optim",
) -> Network:
    """``named``: the network's trainable (name, parameter) pairs, names as in the task."""
    by_type: dict[str, list[dict]] = {}
    rates: dict[str, list[tuple[float, float]]] = {}
    for settings, params in assign_groups(cfg, named, where):
        kind = settings.optimizer or cfg.optimizer
        key = name if kind == cfg.optimizer else f"{name}-{kind}"
        for group in param_groups(params, settings.weight_decay):
            by_type.setdefault(key, []).append(group)
            rates.setdefault(key, []).append((settings.lr, settings.min_lr))
    optimizers = {key: _optimizer(key.partition("-")[2] or cfg.optimizer, groups, cfg)
                  for key, groups in by_type.items()}
    return Network(name, cfg, [p for _, p in named], optimizers, rates, total_updates)


def assign_groups(
    cfg: OptimConfig, named: list[tuple[str, nn.Parameter]], where: str
) -> list[tuple[ParamGroupConfig, list[nn.Parameter]]]:
    """(settings with every field filled in, parameters) per group, the ungrouped rest first; a
    parameter goes to the first group that names it."""
    base = ParamGroupConfig(optimizer=cfg.optimizer, lr=cfg.lr, min_lr=cfg.min_lr,
                            weight_decay=cfg.weight_decay)
    groups = [dataclasses.replace(base, **{k: v for k, v in dataclasses.asdict(g).items()
                                           if v is not None}) for g in cfg.groups]
    members: list[list[nn.Parameter]] = [[] for _ in range(len(groups) + 1)]
    for name, p in named:
        index = next((i for i, g in enumerate(groups) if _names(g.params, name)), -1)
        members[index + 1].append(p)
    for i, g in enumerate(groups):
        if not members[i + 1]:
            raise ConfigError(f"{where}.groups[{i}]: no trainable parameter is named "
                              f"{', '.join(g.params)} (or lies under it)")
    return [(s, m) for s, m in zip([base, *groups], members) if m]


def _names(prefixes: list[str], name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _optimizer(kind: str, groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ConfigError(f"optimizer {kind!r}: choose adamw or sgd")


def param_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Groups that decay matrices and kernels only, as BERT and nanoGPT do. A vector in any
    shape (at most one dimension longer than 1: biases, norm and layer-scale gains, weight-norm
    magnitudes, layer-mixture logits) sets a scale, an offset or a preference, and decay would
    only pull it towards 0: a mixture towards uniform weights."""
    def is_vector(p: nn.Parameter) -> bool:
        return sum(n > 1 for n in p.shape) <= 1

    groups = [
        {"params": [p for p in params if not is_vector(p)], "weight_decay": weight_decay},
        {"params": [p for p in params if is_vector(p)], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
