"""The unconditional token LM and its held-out perplexity: scored per codebook as SpeechLM
scores, bounded by K, lowered by training, far lower on predictable tokens, and the same twice
for one seed."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from data_sim.audio import write_audio
from data_sim.sources import AudioItem
from l3se.models.codec import WavCodec
from l3se.models.llm import LLMConfig
from l3se.models.token_lm import TokenLM
from l3se.models.tokens import TokenLayout
from l3se.training.token_perplexity import (
    TokenLMConfig,
    crop_plan,
    heldout_cross_entropy,
    token_perplexity,
    train_token_lm,
)
from tests.conftest import speech_like
from tests.models.test_lm import TINY_LLM
from tests.models.tiny import tiny_codec_config

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = TokenLayout(n_codebooks=4, codebook_size=32)
CROP = 8


def config(**overrides) -> TokenLMConfig:
    cfg = TokenLMConfig(llm=LLMConfig(pretrained=None, arch=TINY_LLM), steps=40, batch_size=8,
                        lr=3e-3, min_lr=3e-3, warmup_steps=0)
    return dataclasses.replace(cfg, **overrides)


def perplexity(train, test, cfg) -> float:
    lm, _ = train_token_lm(train, LAYOUT, cfg, CROP)
    ce, _ = heldout_cross_entropy(lm, test, CROP, batch=8)
    return math.exp(float(ce.mean()))


def random_codes(n: int, frames: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 32, (4, frames), generator=g) for _ in range(n)]


def test_each_token_is_scored_over_its_own_codebook_and_sees_only_the_past():
    torch.manual_seed(0)
    lm = TokenLM(LLMConfig(pretrained=None, arch=TINY_LLM), LAYOUT).eval()
    codes = torch.randint(0, 32, (2, 4, 5))
    with torch.no_grad():
        ce = lm(codes)
        assert ce.shape == (2, 5, 4)
        # A head of zeros is a uniform guess: ln K, where a softmax over the whole vocabulary
        # (2 + 4 x 32 entries) would give ln 130.
        lm.llm.lm_head.weight.zero_()
        torch.testing.assert_close(lm(codes), torch.full_like(ce, math.log(32)))
    lm = TokenLM(LLMConfig(pretrained=None, arch=TINY_LLM), LAYOUT).eval()
    changed = codes.clone()
    changed[:, 2, 3:] = (changed[:, 2, 3:] + 1) % 32  # frame 3 onwards, codebook 2 onwards
    with torch.no_grad():
        a, b = lm(codes), lm(changed)
    # Tokens before (frame 3, codebook 2) keep their scores: right padding is safe.
    torch.testing.assert_close(a[:, :3], b[:, :3])
    torch.testing.assert_close(a[:, 3, :2], b[:, 3, :2])
    assert not torch.allclose(a[:, 3, 3], b[:, 3, 3])


def test_trivial_tokens_are_far_more_predictable_than_random_ones():
    constant = [torch.full((4, 20), 7) for _ in range(6)]
    # Codebook q of frame t is (t + q) mod 32: the next token follows from the last one.
    counting = [(torch.arange(20)[None] + torch.arange(4)[:, None] + s) % 32 for s in range(6)]
    noise = random_codes(6, 20, seed=0)
    trivial = perplexity(constant, constant[:2], config())
    ordered = perplexity(counting, counting[:2], config())
    random = perplexity(noise, random_codes(2, 20, seed=1), config())
    assert trivial < 1.5 and ordered < 8
    assert random > 0.8 * 32


def test_training_lowers_heldout_perplexity_below_the_uniform_bound():
    # Codebook 0 of each frame is random, codebook q is codebook 0 + q: 3 tokens in 4 follow
    # from the one before, so a trained LM nears 32 ** (1/4) = 2.4.
    first = random_codes(20, 20, seed=0)
    frames = [(c[:1] + torch.arange(4)[:, None]) % 32 for c in first]
    untrained = perplexity(frames[:16], frames[16:], config(steps=0))
    trained = perplexity(frames[:16], frames[16:], config())
    assert untrained == pytest.approx(32, rel=0.25)
    assert trained < 0.5 * 32


def test_crops_depend_on_lengths_and_seed_only():
    plan = crop_plan([20, 5, 9], crop=8, steps=3, batch=4, seed=0)
    assert plan.shape == (3, 4, 2) and torch.equal(plan, crop_plan([20, 5, 9], 8, 3, 4, 0))
    assert not torch.equal(plan, crop_plan([20, 5, 9], 8, 3, 4, 1))
    longest = torch.tensor([20, 5, 9])[plan[..., 0]] - 8
    assert bool((plan[..., 1] <= longest.clamp_min(0)).all())


@pytest.fixture
def speech(tmp_path) -> tuple[TokenLMConfig, list[AudioItem]]:
    """4 training utterances in a manifest, 2 held out."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.wav")
        write_audio(paths[-1], speech_like(rng, 1.0 + 0.25 * i))
    (tmp_path / "train.jsonl").write_text(
        "".join(f'{{"id": "{i}", "path": "{p}"}}\n' for i, p in enumerate(paths[:4])))
    cfg = config(speech=str(tmp_path / "train.jsonl"), steps=4, crop_seconds=0.5)
    return cfg, [AudioItem(id=p.stem, path=str(p)) for p in paths[4:]]


def test_a_codec_with_constant_tokens_scores_far_lower_and_one_seed_gives_one_number(speech):
    cfg, heldout = speech
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config()).eval()
    first, again = (token_perplexity(codec, heldout, cfg) for _ in range(2))
    assert first == again
    assert len(first.per_codebook) == 8 and first.codebook_size == 64
    assert first.tokens == 8 * sum(math.ceil((1.0 + 0.25 * i) * 16000 / 1280) for i in (4, 5))
    assert math.isfinite(first.train_loss)
    # Every entry of every codebook alike: each stage picks entry 0 whatever the input.
    for vq in codec.quantizer.quantizers:
        vq.codebook.weight.data[:] = vq.codebook.weight.data[:1]
    constant = token_perplexity(codec, heldout, dataclasses.replace(cfg, steps=30))
    assert constant.overall < 2 < 0.5 * first.overall
