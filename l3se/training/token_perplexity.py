"""Token predictability of a codec: the held-out per-token perplexity of an unconditional
``TokenLM`` trained for a fixed number of steps on the codec's tokens of clean speech.

Comparable across codecs by construction: every codec gets the same training utterances (a
seeded sample of the manifest), the same crops (seeded positions, a function of the token
lengths alone, which every codec of one frame rate shares), the same initial weights and the same
schedule; only the tokens differ. Held-out speech is scored in consecutive windows of the
training crop's length (the last one shorter), so no position lies further into a sequence than
training reached.

Perplexity is exp of the mean cross-entropy of each token under a softmax over its own codebook:
K for a uniform guess, 1 for tokens the LM always gets right.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from data_sim.sources import AudioItem
from l3se.models.llm import LLMConfig
from l3se.models.token_lm import TokenLM
from l3se.models.tokens import TokenLayout


@dataclass
class TokenLMConfig:
    # Clean training speech: a manifest, folder or index (``data_sim.sources.load_source``).
    speech: str = "data/starter/speech/train.jsonl"
    # A seeded sample of this many utterances, each encoded whole (null: all of them).
    utterances: int | None = 500
    llm: LLMConfig = field(default_factory=lambda: LLMConfig(pretrained=None, arch="tiny"))
    steps: int = 300
    batch_size: int = 16
    crop_seconds: float = 2.0
    lr: float = 1.0e-3
    min_lr: float = 1.0e-4
    warmup_steps: int = 30
    weight_decay: float = 0.01
    seed: int = 0


@dataclass
class Perplexity:
    overall: float  # exp(mean cross-entropy over every held-out token)
    per_codebook: list[float]  # [Q], the same over each codebook's tokens
    codebook_size: int  # K: the perplexity of a uniform guess
    tokens: int  # held-out tokens scored
    train_loss: float | None  # mean cross-entropy (nats) of the last tenth of training steps


def training_utterances(cfg: TokenLMConfig) -> list[AudioItem]:
    """The seeded sample of ``cfg.speech`` the LM trains on, in manifest order."""
    from data_sim.sources import load_source

    items = load_source(cfg.speech)
    if cfg.utterances is None or cfg.utterances >= len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(cfg.seed).sample(range(len(items)), cfg.utterances))]


def encode(codec: nn.Module, items: Sequence[AudioItem]) -> list[torch.Tensor]:
    """Each item's whole utterance through ``codec`` (a WavCodec, on its own device) -> codes
    [Q, T] (int64, on the CPU)."""
    from data_sim.audio import load_audio

    device = next(codec.parameters()).device
    out = []
    with torch.inference_mode():
        for item in items:
            wav = load_audio(item.path, codec.sample_rate, byte_range=item.byte_range)
            out.append(codec.encode(torch.from_numpy(wav)[None].to(device))[0].cpu())
    return out


def crop_plan(lengths: Sequence[int], crop: int, steps: int, batch: int, seed: int) -> torch.Tensor:
    """Token lengths [N] -> [steps, batch, 2] (utterance, first frame) of each training crop: a
    function of the lengths and the seed alone. An utterance shorter than ``crop`` is taken
    whole."""
    g = torch.Generator().manual_seed(seed)
    utterance = torch.randint(len(lengths), (steps, batch), generator=g)
    room = (torch.tensor(lengths)[utterance] - crop).clamp_min(0) + 1
    start = (torch.rand(steps, batch, generator=g) * room).long()
    return torch.stack([utterance, start], -1)


def crops(codes: Sequence[torch.Tensor], picks: torch.Tensor | Sequence[tuple[int, int]], crop: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [Q, T_i] per utterance, picks [B, 2] (utterance, first frame) -> (codes
    [B, Q, crop], right-padded with 0, and valid [B, crop])."""
    x = torch.zeros(len(picks), codes[0].shape[0], crop, dtype=torch.long)
    valid = torch.zeros(len(picks), crop, dtype=torch.bool)
    for b, (i, start) in enumerate(picks):
        piece = codes[int(i)][:, int(start) : int(start) + crop]
        x[b, :, : piece.shape[1]] = piece
        valid[b, : piece.shape[1]] = True
    return x, valid


def train_token_lm(codes: Sequence[torch.Tensor], tokens: TokenLayout, cfg: TokenLMConfig,
                   crop: int, device: torch.device | str = "cpu") -> tuple[TokenLM, float | None]:
    """A TokenLM trained for ``cfg.steps`` AdamW steps (warm-up and cosine) on seeded crops of
    ``crop`` frames of ``codes`` ([Q, T_i] per utterance) -> (the LM, its training loss)."""
    from l3se.training.optim import param_groups
    from l3se.training.schedule import warmup_cosine

    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        lm = TokenLM(cfg.llm, tokens)
    lm.to(device).train()
    params = [p for p in lm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(params, cfg.weight_decay), lr=cfg.lr)
    plan = crop_plan([c.shape[1] for c in codes], crop, cfg.steps, cfg.batch_size, cfg.seed)
    losses = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = warmup_cosine(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps)
        x, valid = crops(codes, plan[step], crop)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = lm(x.to(device))[valid.to(device)].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 10) :]
    return lm.eval(), sum(tail) / len(tail) if tail else None


def heldout_cross_entropy(lm: TokenLM, codes: Sequence[torch.Tensor], crop: int, batch: int
                          ) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy (nats) per codebook [Q] over every token of ``codes`` ([Q, T_i] per
    utterance), scored in consecutive windows of ``crop`` frames; and the number of frames."""
    device = next(lm.parameters()).device
    windows = [(i, s) for i, c in enumerate(codes) for s in range(0, c.shape[1], crop)]
    total = torch.zeros(lm.tokens.n_codebooks, dtype=torch.float64)
    frames = 0
    with torch.inference_mode():
        for first in range(0, len(windows), batch):
            x, valid = crops(codes, windows[first : first + batch], crop)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                ce = lm(x.to(device))
            total += ce[valid.to(device)].sum(0).double().cpu()
            frames += int(valid.sum())
    return total / frames, frames


def token_perplexity(codec: nn.Module, heldout: Sequence[AudioItem], cfg: TokenLMConfig
                     ) -> Perplexity:
    """Train a TokenLM on ``codec``'s tokens of ``cfg.speech`` (on the codec's device) and score
    its perplexity on the tokens of ``heldout``. The codec is put in eval mode: in training mode
    its quantizer would restart entries while encoding."""
    codec.eval()
    crop = max(1, round(cfg.crop_seconds * codec.sample_rate / codec.frame_length))
    tokens = TokenLayout(codec.cfg.n_codebooks, codec.cfg.codebook_size)
    lm, train_loss = train_token_lm(encode(codec, training_utterances(cfg)), tokens, cfg, crop,
                                    next(codec.parameters()).device)
    ce, frames = heldout_cross_entropy(lm, encode(codec, heldout), crop, cfg.batch_size)
    return Perplexity(overall=math.exp(float(ce.mean())), per_codebook=ce.exp().tolist(),
                      codebook_size=tokens.codebook_size, tokens=frames * tokens.n_codebooks,
                      train_loss=train_loss)
