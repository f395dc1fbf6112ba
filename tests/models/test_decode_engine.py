"""``generate``'s static-cache engine against the plain loop it replaced: transformers' model
called per token with a growing ``DynamicCache`` (kept here as the reference)."""

import re

import pytest
import torch

from l3se.cli import set_threads
from l3se.decoding import DecodeConfig, StaticStep, generate, left_pad, pick
from l3se.models.llm import cache_kwargs
from l3se.models.tokens import BOS
from tests.models.test_lm import tiny_lm

pytestmark = pytest.mark.usefixtures("one_thread")


@torch.inference_mode()
def reference_generate(lm, prefix, frame_lengths, cfg, seeds=None):
    """The decoding loop before the static cache, step by step through ``lm.body``."""
    from transformers import DynamicCache

    tokens = lm.tokens
    b, t, _ = prefix.shape
    q, n = tokens.n_codebooks, tokens.n_codebooks * t
    device = prefix.device
    seeds = [cfg.seed] * b if seeds is None and cfg.seed is not None else seeds
    generators = None
    if cfg.strategy == "sample" and seeds is not None:
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    padded, valid = left_pad(prefix, frame_lengths)
    mask = torch.cat([valid, valid.new_ones(b, 1 + n)], 1).long()
    positions = lm.position_ids(mask)
    heads = lm.codebook_head()
    offsets = tokens.n_specials + tokens.codebook_size * torch.arange(q, device=device)
    out = torch.zeros(b, n, dtype=torch.long, device=device)
    x = torch.cat([padded, lm.embed(torch.full((b, 1), BOS, device=device)).to(padded.dtype)], 1)
    cache = DynamicCache(config=lm.llm.config)
    end = t + 1
    for i in range(n):
        hidden = lm.body(inputs_embeds=x, attention_mask=mask[:, :end],
                         position_ids=positions[:, end - x.shape[1] : end],
                         **cache_kwargs(cache)).last_hidden_state[:, -1]
        entry = pick(hidden @ heads[i % q].T, cfg, generators)
        out[:, i] = entry
        x, end = lm.embed((entry + offsets[i % q])[:, None]).to(x.dtype), end + 1
    codes = out.view(b, t, q).transpose(1, 2)
    return codes * (torch.arange(t, device=device)[None, None] < frame_lengths[:, None, None])


@pytest.mark.parametrize("frame_positions", [False, True])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("cfg", [
    DecodeConfig(),
    DecodeConfig(strategy="sample", temperature=1.5, seed=3),
    DecodeConfig(strategy="sample", temperature=0.8, top_k=20, top_p=0.9, seed=5),
], ids=["greedy", "sample", "sample-filtered"])
def test_engine_matches_the_reference_loop(frame_positions, attention, cfg):
    torch.manual_seed(0)
    lm = tiny_lm("acoustic", frame_positions=frame_positions).eval()
    lm.llm.set_attn_implementation(attention)
    # Left-padded items of different lengths, and a batch without padding.
    for lengths in (torch.tensor([6, 2, 5, 1]), torch.tensor([6, 6])):
        prefix = torch.randn(len(lengths), 6, 64)
        seeds = list(range(10, 10 + len(lengths)))
        expected = reference_generate(lm, prefix, lengths, cfg, seeds)
        assert torch.equal(generate(lm, prefix, lengths, cfg, seeds), expected)


def test_engine_matches_the_reference_on_a_longer_sequence():
    # Longer than one block of the CPU attention kernel (512 keys), where the full-length
    # masked attention and the reference's growing one are split differently.
    torch.manual_seed(4)
    lm = tiny_lm("acoustic").eval()
    prefix, lengths = torch.randn(2, 110, 64), torch.tensor([110, 97])
    for cfg in (DecodeConfig(), DecodeConfig(strategy="sample", seed=1)):
        assert torch.equal(generate(lm, prefix, lengths, cfg), reference_generate(lm, prefix, lengths, cfg))


def test_the_cpu_never_touches_cuda_graphs():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").eval()
    generate(lm, torch.randn(2, 3, 64), torch.tensor([3, 2]), DecodeConfig())
    assert lm not in StaticStep._graphs


def test_cpu_threads_default_to_one_unless_asked(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    set_threads(None, "cpu")
    assert torch.get_num_threads() == 1
    set_threads(3, "cpu")
    assert torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    set_threads(None, "cpu")
    assert torch.get_num_threads() == 3  # the environment's choice stands


def test_the_benchmark_checks_its_decoders_in_quick_mode(capsys):
    from benchmarks import bench_decode  # here: it imports this module's reference

    # Every decoder must give the engine's codes (the benchmark raises otherwise).
    ratio = bench_decode.main(["--quick", "--repeats", "1"])
    out = capsys.readouterr().out
    assert ratio > 0 and out.splitlines()[-1].startswith("engine / transformers generate speed")
    for decoder in ("per-token", "engine", "hf", "full-head"):
        assert len(re.findall(rf"^ +tiny .* {decoder} .* 100\.0%$", out, re.MULTILINE)) == 2
