from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from l3se.config import ConfigError, from_dict
from l3se.decoding import DecodeConfig, generate, gumbel_noise, left_pad, pick
from l3se.enhancer import EnhancerConfig
from l3se.models.codec import WavCodec
from tests.conftest import speech_like
from tests.models.test_lm import tiny_lm
from tests.models.tiny import tiny_codec_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_left_pad():
    x = torch.arange(1, 7, dtype=torch.float).view(2, 3, 1)
    padded, valid = left_pad(x, torch.tensor([3, 1]))
    assert padded[..., 0].tolist() == [[1, 2, 3], [0, 0, 4]]
    assert valid.tolist() == [[True, True, True], [False, False, True]]


def test_sampling_stays_inside_each_codebook():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").eval()
    prefix, lengths = torch.randn(2, 3, 64), torch.tensor([3, 2])
    k = lm.tokens.codebook_size
    seen = set()
    for seed in range(6):
        cfg = DecodeConfig(strategy="sample", temperature=20.0, seed=seed)
        codes = generate(lm, prefix, lengths, cfg)
        assert codes.shape == (2, 4, 3) and codes.dtype == torch.long
        assert bool(((codes >= 0) & (codes < k)).all())
        assert bool((codes[1, :, 2] == 0).all())  # past the second item's end
        seen.update(codes[0].flatten().tolist())
    # At this temperature sampling is near uniform: many entries appear, none illegal.
    assert len(seen) > k // 2


def test_seeded_sampling_is_reproducible_and_filters_work():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").eval()
    prefix, lengths = torch.randn(2, 4, 64), torch.tensor([4, 3])
    cfg = DecodeConfig(strategy="sample", temperature=1.5, top_k=8, top_p=0.95, seed=7)
    first = generate(lm, prefix, lengths, cfg)
    assert torch.equal(first, generate(lm, prefix, lengths, cfg))
    other = DecodeConfig(strategy="sample", temperature=1.5, top_k=8, top_p=0.95, seed=8)
    assert not torch.equal(first, generate(lm, prefix, lengths, other))
    greedy = generate(lm, prefix, lengths, DecodeConfig())
    for narrow in (DecodeConfig(strategy="sample", top_k=1, seed=1),
                   DecodeConfig(strategy="sample", top_p=1e-6, seed=1)):
        assert torch.equal(generate(lm, prefix, lengths, narrow), greedy)


class OpCounter(TorchDispatchMode):
    """Counts the aten operators run inside it, by name."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def test_sampling_draws_once_per_item_and_picks_each_token_in_one_launch():
    torch.manual_seed(0)
    lm = tiny_lm("acoustic").eval()
    prefix, lengths = torch.randn(3, 4, 64), torch.tensor([4, 2, 3])
    cfg = DecodeConfig(strategy="sample", temperature=1.5, top_k=8, top_p=0.9)
    with OpCounter() as counter:
        generate(lm, prefix, lengths, cfg, seeds=[1, 2, 3])
    tokens = lm.tokens.n_codebooks * 4
    assert counter.ops["multinomial"] == 0
    assert counter.ops["rand"] == 3  # each item's uniforms, from its own generator
    assert counter.ops["argmax"] == tokens  # every row of a step at once


@pytest.mark.parametrize("cfg", [
    DecodeConfig(strategy="sample", temperature=0.7),
    DecodeConfig(strategy="sample", temperature=1.3, top_k=5),
    DecodeConfig(strategy="sample", top_p=0.75),
], ids=["temperature", "top-k", "top-p"])
def test_gumbel_max_samples_the_filtered_softmax(cfg):
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]])
    draws = 40_000
    generator = torch.Generator().manual_seed(0)
    noise = gumbel_noise([generator], [draws], draws, logits.shape[1], torch.device("cpu"))[0]
    picked = pick(logits.expand(draws, -1), cfg, noise)
    freq = torch.bincount(picked, minlength=logits.shape[1]).double() / draws
    probs = (logits[0].double() / cfg.temperature).softmax(-1)
    if cfg.top_k:
        probs[cfg.top_k :] = 0
    if cfg.top_p < 1:
        # Entries 0-2 stay: 0.65 of the mass comes before entry 2, 0.80 before entry 3.
        keep = (probs.cumsum(-1) - probs) < cfg.top_p
        probs = probs * keep
    probs /= probs.sum()
    assert bool((freq[probs == 0] == 0).all())
    # 4 standard deviations of a frequency at 40k draws is under 0.01.
    assert (freq - probs).abs().max() < 0.01, (freq, probs)


def test_gumbel_noise_of_an_item_ignores_its_batch():
    def noise(counts, steps):
        gens = [torch.Generator().manual_seed(s) for s in (5, 6)[: len(counts)]]
        return gumbel_noise(gens, counts, steps, 4, torch.device("cpu"))

    alone, batched = noise([3], 3), noise([3, 7], 7)
    assert torch.equal(batched[0, :3], alone[0])
    assert bool((batched[0, 3:] == float("-inf")).all())  # past the item's tokens: never picked


@pytest.mark.parametrize(("field", "value", "message"), [
    ("strategy", "beam", "strategy must be 'greedy', 'sample' or 'mbr', got 'beam'"),
    ("temperature", 0.0, "temperature must be above 0, got 0.0"),
    ("top_k", -1, "top_k must be 0 (no filtering) or more, got -1"),
    ("top_p", 0.0, "top_p must be in (0, 1] (1: no filtering), got 0.0"),
    ("top_p", 1.5, "top_p must be in (0, 1] (1: no filtering), got 1.5"),
])
def test_decode_settings_are_checked_where_they_are_made(field, value, message):
    with pytest.raises(ConfigError) as excinfo:
        DecodeConfig(**{field: value})
    assert str(excinfo.value) == message
    # A model directory's settings are checked too.
    with pytest.raises(ConfigError, match=f"decode.*{field}"):
        from_dict(EnhancerConfig, {"decode": {field: value}})


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_batched_greedy_equals_per_item(attention):
    torch.manual_seed(1)
    lm = tiny_lm("acoustic").eval()
    lm.llm.set_attn_implementation(attention)
    assert lm.llm.config._attn_implementation == attention
    lengths = torch.tensor([5, 2, 4, 1])
    prefix = torch.randn(4, 5, 64)
    batched = generate(lm, prefix, lengths, DecodeConfig())
    for i, n in enumerate(lengths.tolist()):
        alone = generate(lm, prefix[i : i + 1, :n], lengths[i : i + 1], DecodeConfig())
        assert torch.equal(batched[i, :, :n], alone[0])
        assert not batched[i, :, n:].any()


def test_overfit_one_utterance_decodes_its_codes():
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config()).eval()
    wav = torch.from_numpy(speech_like(np.random.default_rng(0), 1.0))[None]
    with torch.no_grad():
        target = codec.encode(wav)  # [1, 8, 13]
    lm = tiny_lm("acoustic", n_codebooks=codec.cfg.n_codebooks,
                 codebook_size=codec.cfg.codebook_size)
    features = torch.randn(1, target.shape[-1], 12)
    lengths = torch.tensor([target.shape[-1]])
    opt = torch.optim.AdamW(lm.parameters(), lr=5e-3, weight_decay=0.0)
    for _ in range(150):
        out = lm(lm.prefix(features), lengths, target)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    lm.eval()
    with torch.no_grad():
        prefix = lm.prefix(features)
        teacher_forced = lm(prefix, lengths, target).accuracy.item()
    codes = generate(lm, prefix, lengths, DecodeConfig())
    assert teacher_forced == 1.0, teacher_forced
    # Greedy decoding on its own outputs reproduces every code; another prefix does not, so the
    # codes come from decoding this prefix.
    assert torch.equal(codes, target), (codes != target).float().mean().item()
    other = generate(lm, lm.prefix(torch.randn_like(features)), lengths, DecodeConfig())
    assert not torch.equal(other, target)


def test_sampled_items_do_not_depend_on_their_batch():
    torch.manual_seed(2)
    lm = tiny_lm("acoustic").eval()
    prefix, lengths = torch.randn(3, 4, 64), torch.tensor([4, 2, 4])
    prefix[2] = prefix[0]
    cfg = DecodeConfig(strategy="sample", temperature=3.0, seed=None)
    seeds = [11, 12, 11]
    batched = generate(lm, prefix, lengths, cfg, seeds)
    for i, n in enumerate(lengths.tolist()):
        alone = generate(lm, prefix[i : i + 1, :n], lengths[i : i + 1], cfg, seeds[i : i + 1])
        assert torch.equal(batched[i, :, :n], alone[0])
    order = [1, 2, 0]
    assert torch.equal(generate(lm, prefix[order], lengths[order], cfg, [seeds[i] for i in order]),
                       batched[order])
    # Rows 0 and 2 are the same item with the same seed (one generator for the batch gave them
    # different draws); another seed draws otherwise.
    assert torch.equal(batched[2], batched[0])
    other = generate(lm, prefix[:1], lengths[:1], cfg, [13])
    assert not torch.equal(other, batched[:1])
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        generate(lm, prefix, lengths, cfg, [1, 2])


def test_mbr_picks_the_entry_nearest_the_expected_vector_not_the_likeliest():
    entries = torch.tensor([[-1.0, 0.0], [0.1, 0.0], [1.0, 0.0]])
    # Two far-apart entries share the mass: the likeliest is one of them, the expectation lies
    # between them, nearest the middle entry.
    logits = torch.tensor([[0.46, 0.08, 0.46]]).log()
    logits[0, 0] += 1e-3
    mbr = DecodeConfig(strategy="mbr")
    assert pick(logits, DecodeConfig()).item() == 0
    assert pick(logits, mbr, entries=entries).item() == 1
    # A peaked distribution, or a low temperature, gives the likeliest entry.
    assert pick(torch.tensor([[5.0, 0.0, 0.0]]), mbr, entries=entries).item() == 0
    assert pick(logits, DecodeConfig(strategy="mbr", temperature=1e-4), entries=entries).item() == 0
    with pytest.raises(ValueError, match="codebook's vectors"):
        pick(logits, mbr)


def test_mbr_decoding_picks_each_token_from_the_distribution_it_was_decoded_with():
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config()).eval()
    q, k = codec.cfg.n_codebooks, codec.cfg.codebook_size
    lm = tiny_lm("acoustic", n_codebooks=q, codebook_size=k).eval()
    prefix, lengths = lm.prefix(torch.randn(2, 5, 12)), torch.tensor([5, 3])
    entries = codec.entry_vectors()
    assert entries.shape == (q, k, codec.cfg.dim)
    # Each entry's vector is what decoding adds for it: one code per codebook sums to the latent.
    codes = torch.randint(k, (1, q, 1))
    latent = codec.quantizer.from_codes(codes)[0][0, :, 0]
    assert torch.allclose(entries[torch.arange(q), codes[0, :, 0]].sum(0), latent, atol=1e-5)

    cfg = DecodeConfig(strategy="mbr", temperature=2.0)
    codes = generate(lm, prefix, lengths, cfg, entries=entries)
    assert codes.shape == (2, q, 5) and not codes[1, :, 3:].any()
    # Teacher forcing on the decoded codes gives back the distributions they were picked from.
    logits = lm(prefix[:1], lengths[:1], codes[:1]).logits[0]  # [T, Q, K]
    redone = torch.stack([pick(logits[:, c], cfg, entries=entries[c]) for c in range(q)])
    assert torch.equal(redone, codes[0])
    assert not torch.equal(codes[0], logits.argmax(-1).T)  # not greedy decoding by another name
    with pytest.raises(ValueError, match="codebook's vectors"):
        generate(lm, prefix, lengths, cfg)
