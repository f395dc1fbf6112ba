"""``generate``'s static-cache engine against the plain loop it replaced: transformers' model
called per token with a growing ``DynamicCache`` (kept here as the reference)."""

import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from unittest import mock

import pytest
import torch

from l3se import decoding
from l3se.decoding import (
    CUDA_GRAPHS_ENV,
    DecodeConfig,
    DecodeEngine,
    cpu_threads,
    generate,
    graph_key,
    left_pad,
    pick,
    sampling_noise,
)
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
    noise = sampling_noise(cfg, seeds, (q * frame_lengths).tolist(), n, tokens.codebook_size,
                           device)
    padded, valid = left_pad(prefix, frame_lengths)
    mask = torch.cat([valid, valid.new_ones(b, 1 + n)], 1).long()
    positions = lm.position_ids(mask)
    heads = lm.codebook_head()
    offsets = tokens.n_specials + tokens.codebook_size * torch.arange(q, device=device)
    out = torch.zeros(b, n, dtype=torch.long, device=device)
    bos = lm.embed(torch.full((b, 1), BOS, device=device)).to(padded.dtype)
    x = torch.cat([padded, lm.frame_inputs(bos, prefix)], 1)
    cache = DynamicCache(config=lm.llm.config)
    end = t + 1
    for i in range(n):
        hidden = lm.body(inputs_embeds=x, attention_mask=mask[:, :end],
                         position_ids=positions[:, end - x.shape[1] : end],
                         **cache_kwargs(cache)).last_hidden_state[:, -1]
        entry = pick(hidden @ heads[i % q].T, cfg, None if noise is None else noise[:, i])
        out[:, i] = entry
        token = lm.embed((entry + offsets[i % q])[:, None]).to(x.dtype)
        x, end = lm.frame_inputs(token, prefix, i + 1), end + 1
    codes = out.view(b, t, q).transpose(1, 2)
    return codes * (torch.arange(t, device=device)[None, None] < frame_lengths[:, None, None])


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("frame", ["plain", "frame_positions", "frame_inputs"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("cfg", [
    DecodeConfig(),
    DecodeConfig(strategy="sample", temperature=1.5, seed=3),
    DecodeConfig(strategy="sample", temperature=0.8, top_k=20, top_p=0.9, seed=5),
], ids=["greedy", "sample", "sample-filtered"])
def test_engine_matches_the_reference_loop(bf16, frame, attention, cfg):
    torch.manual_seed(0)
    lm = tiny_lm("acoustic", **({} if frame == "plain" else {frame: True})).eval()
    if lm.frame_projection is not None:  # it starts at zero, a no-op
        torch.nn.init.normal_(lm.frame_projection.weight, std=0.1)
    lm.llm.set_attn_implementation(attention)
    # Left-padded items of different lengths, and a batch without padding. Under autocast the
    # keys (after an fp32 norm) and the values (bf16) differ in dtype in the step's buffers.
    for lengths in (torch.tensor([6, 2, 5, 1]), torch.tensor([6, 6])):
        prefix = torch.randn(len(lengths), 6, 64)
        seeds = list(range(10, 10 + len(lengths)))
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
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


def test_graph_keys_follow_weights_implementation_dtypes_and_shape():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").eval()
    prefix = torch.randn(4, 6, 64)
    first, again = decode_keys(lm, prefix, [6, 2, 5, 1]), decode_keys(lm, prefix, [6, 6, 3, 4])
    # Another padding of the same shape replays the same graph (its buffers are reloaded).
    assert first == again
    with torch.autocast("cpu", torch.bfloat16):
        assert decode_keys(lm, prefix, [6, 2, 5, 1]) != first
    assert decode_keys(lm, prefix[:3], [6, 2, 5]) != first
    lm.llm.set_attn_implementation("eager")
    assert decode_keys(lm, prefix, [6, 2, 5, 1]) != first
    lm.llm.set_attn_implementation("sdpa")
    # Reloaded weights live elsewhere: a graph would read the old (freed) storage.
    old = list(lm.parameters())
    lm.load_state_dict({k: v.clone() for k, v in lm.state_dict().items()}, assign=True)
    assert decode_keys(lm, prefix, [6, 2, 5, 1]) != first
    del old


def decode_keys(lm, prefix, lengths) -> tuple:
    """The graph key of a ``generate`` call (on the CPU, where nothing is captured)."""
    keys = []

    class Recording(DecodeEngine):
        @contextmanager
        def step(self, lm, prefill, mask, positions, like):
            keys.append(graph_key(lm, prefill, mask, like))
            with super().step(lm, prefill, mask, positions, like) as step:
                yield step

    generate(lm, prefix, torch.tensor(lengths), DecodeConfig(), engine=Recording())
    (key,) = keys
    return key


def test_cuda_graphs_can_be_switched_off(monkeypatch):
    monkeypatch.delenv(CUDA_GRAPHS_ENV, raising=False)
    assert DecodeEngine().cuda_graphs
    monkeypatch.setenv(CUDA_GRAPHS_ENV, "0")
    assert not DecodeEngine().cuda_graphs and DecodeEngine(cuda_graphs=True).cuda_graphs
    monkeypatch.setenv(CUDA_GRAPHS_ENV, "off")
    assert not DecodeEngine().cuda_graphs


def test_only_the_token_loop_runs_on_the_engines_threads():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").eval()
    torch.set_num_threads(2)  # the one_thread fixture restores the count
    seen = []
    pick = decoding.pick

    def spy(*args):
        seen.append(torch.get_num_threads())
        return pick(*args)

    prefix, lengths = torch.randn(1, 2, 64), torch.tensor([2])
    with mock.patch.object(decoding, "pick", spy):
        generate(lm, prefix, lengths, DecodeConfig(), engine=DecodeEngine(threads=1))
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        generate(lm, prefix, lengths, DecodeConfig())
        assert set(seen) == {2}


def test_overlapping_thread_limits_restore_the_count():
    torch.set_num_threads(2)
    outer, inner = cpu_threads(1), cpu_threads(1)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first to enter leaves first
    assert torch.get_num_threads() == 1
    inner.__exit__(None, None, None)
    assert torch.get_num_threads() == 2


def test_enhance_leaves_the_models_threads_alone_unless_asked(monkeypatch):
    from l3se.cli import main

    seen = []

    def enhance_corpus(*args, decode_threads, **kwargs):
        seen.append((torch.get_num_threads(), decode_threads))
        summary = dict(ok=1, files=1, resumed=0, skipped=0, failed=0, audio_seconds=1.0, rtf=0.1)
        return {"summary": summary, "files": []}

    monkeypatch.setattr("l3se.enhance_corpus.enhance_corpus", enhance_corpus)
    torch.set_num_threads(2)  # the one_thread fixture restores the count
    for extra in ([], ["--threads", "3"]):
        assert main(["enhance", "in.wav", "out.wav", "--no-progress", *extra]) == 0
    # By default WavLM and the codec keep the process's threads, the token loop takes 1.
    assert seen == [(2, 1), (3, 3)]


# GPU tests: the CPU runs the same checks on its eager step, so that they are known to pass
# there, and to fail for a wrong padding or stale weights (the controls inside).
CUDA = [pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                      reason="needs CUDA"))]
DEVICES = ["cpu", *CUDA]
# Largest logit difference to a teacher-forced pass in bf16 autocast (0.002 on the CPU, where
# the wrong padding's control is 0.2 or more; GPU kernels differ with the attended length).
BF16_ATOL = 0.03
GREEDY = DecodeConfig()


def engine_logits(lm, prefix, lengths, engine, cfg=GREEDY):
    """``generate``'s codes [B, Q, T] and the logits [B, Q*T, K] it picked from."""
    seen = []
    pick = decoding.pick

    def spy(logits, *args):
        seen.append(logits.float().clone())
        return pick(logits, *args)

    with mock.patch.object(decoding, "pick", spy):
        codes = generate(lm, prefix, lengths, cfg, engine=engine)
    return codes, torch.stack(seen, 1)


@torch.inference_mode()
def forced_logits(lm, prefix, lengths, codes) -> torch.Tensor:
    """The logits [B, Q*T, K] of ``codes`` teacher-forced through transformers in one pass."""
    tokens = lm.tokens
    b, t, _ = prefix.shape
    q, n = tokens.n_codebooks, tokens.n_codebooks * t
    padded, valid = left_pad(prefix, lengths)
    full = torch.cat([valid, valid.new_ones(b, 1 + n)], 1)
    codebook = torch.arange(n, device=prefix.device) % q
    ids = codes.transpose(1, 2).reshape(b, n) + tokens.n_specials + tokens.codebook_size * codebook
    bos = lm.embed(torch.full((b, 1), BOS, device=prefix.device))
    x = torch.cat([padded, bos.to(padded.dtype), lm.embed(ids[:, :-1]).to(padded.dtype)], 1)
    hidden = lm.body(inputs_embeds=x, attention_mask=full[:, :-1].long(),
                     position_ids=lm.position_ids(full)[:, :-1]).last_hidden_state[:, t:]
    heads = lm.codebook_head()
    return torch.einsum("bnh,bnkh->bnk", hidden, heads[codebook][None].expand(b, -1, -1, -1)).float()


def check_engine(lm, prefix, lengths, engine, wrong_lengths, cfg=GREEDY) -> None:
    """The engine's logits equal a teacher-forced pass of its own codes with ``lengths``'
    padding, and differ from one with ``wrong_lengths``' (what stale buffers would give)."""
    codes, logits = engine_logits(lm, prefix, lengths, engine, cfg)
    q = lm.tokens.n_codebooks
    frames = torch.arange(prefix.shape[1], device=prefix.device)
    real = (frames[None] < lengths[:, None]).repeat_interleave(q, 1)
    right = (logits - forced_logits(lm, prefix, lengths, codes)).abs()[real].max()
    wrong = (logits - forced_logits(lm, prefix, wrong_lengths, codes)).abs()[real].max()
    assert right < BF16_ATOL < wrong / 5, (right, wrong)


def graph_setup(device: str):
    """(the tiny LM on ``device``, a graph-capturing engine, a 4 x 6-frame prefix)."""
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").to(device).eval()
    return lm, DecodeEngine(cuda_graphs=True), torch.randn(4, 6, 64, device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_same_shape_calls_with_other_padding_in_bf16(device):
    lm, engine, prefix = graph_setup(device)
    paddings = [torch.tensor(n, device=device) for n in ([6, 2, 5, 1], [6, 6, 3, 4])]
    sample = DecodeConfig(strategy="sample", temperature=1.5, seed=3)
    with torch.autocast(device, torch.bfloat16):
        for cfg in (DecodeConfig(), sample):
            for lengths, other in zip(paddings, paddings[::-1]):
                check_engine(lm, prefix, lengths, engine, other, cfg)
    assert engine.graphs == (device == "cuda")  # one shape, one graph, replayed


@pytest.mark.parametrize("device", DEVICES)
def test_graphs_follow_a_moved_or_reloaded_model(device):
    lm, engine, prefix = graph_setup(device)
    lengths, other = torch.tensor([6, 2, 5, 1], device=device), torch.tensor([6] * 4, device=device)
    with torch.autocast(device, torch.bfloat16):
        check_engine(lm, prefix, lengths, engine, other)
        lm.to("cpu").to(device)
        check_engine(lm, prefix, lengths, engine, other)
        before, _ = engine_logits(lm, prefix, lengths, engine)
        torch.manual_seed(1)
        weights = {k: v.to(device) for k, v in tiny_lm("acoustic").state_dict().items()}
        lm.load_state_dict(weights, assign=True)
        check_engine(lm, prefix, lengths, engine, other)
        # The new weights decode otherwise: a graph reading the old ones would fail above.
        assert not torch.equal(engine_logits(lm, prefix, lengths, engine)[0], before)
    assert engine.graphs <= DecodeEngine.KEEP_GRAPHS


@pytest.mark.parametrize("device", DEVICES)
def test_threads_sharing_an_engine_decode_as_alone(device):
    lm, engine, prefix = graph_setup(device)
    paddings = [torch.tensor(n, device=device) for n in ([6, 2, 5, 1], [6, 6, 3, 4])] * 4
    alone = [generate(lm, prefix, n, DecodeConfig(), engine=engine) for n in paddings]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda n: generate(lm, prefix, n, DecodeConfig(), engine=engine),
                                 paddings))
    assert all(torch.equal(a, b) for a, b in zip(alone, together))
    assert not torch.equal(alone[0], alone[1])  # the paddings decode differently


@pytest.mark.parametrize("device", CUDA)
def test_free_releases_the_graphs_and_their_buffers(device):
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").to(device).eval()
    engine = DecodeEngine(cuda_graphs=True)
    for frames in (3, 4, 5):
        generate(lm, torch.randn(2, frames, 64, device=device),
                 torch.tensor([frames, 2], device=device), DecodeConfig(), engine=engine)
    assert engine.graphs == DecodeEngine.KEEP_GRAPHS
    held = torch.cuda.memory_allocated(device)
    engine.free()
    assert engine.graphs == 0 and torch.cuda.memory_allocated(device) < held
    off = DecodeEngine(cuda_graphs=False)
    generate(lm, torch.randn(2, 3, 64, device=device), torch.tensor([3, 2], device=device),
             DecodeConfig(), engine=off)
    assert off.graphs == 0


def test_the_benchmark_checks_its_decoders_in_quick_mode(capsys):
    from benchmarks import bench_decode  # here: it imports this module's reference

    # Every decoder must give the engine's codes (the benchmark raises otherwise).
    ratio = bench_decode.main(["--quick", "--repeats", "1"])
    out = capsys.readouterr().out
    assert ratio > 0 and out.splitlines()[-1].startswith("engine / transformers generate speed")
    for decoder in ("per-token", "engine", "hf", "full-head"):
        assert len(re.findall(rf"^ +tiny .* {decoder} .* 100\.0%$", out, re.MULTILINE)) == 2
