from dataclasses import replace

import numpy as np
import pytest
import torch

from data_sim.audio import resample
from l3se import enhancer as enhancer_mod
from l3se.config import ConfigError
from l3se.decoding import DecodeConfig, generate
from l3se.enhancer import (
    CONFIG_FILE,
    Enhancer,
    EnhancerConfig,
    check_model_dir,
    crossfade,
    item_seed,
    plan_chunks,
    read_config,
    to_mono,
)
from l3se.models.codec import WavCodec
from l3se.models.llm import LLMConfig
from l3se.models.lm import SpeechLM, SpeechLMConfig
from l3se.models.ni_encoder import NIEncoder
from tests.conftest import speech_like
from tests.enhance.tiny_model import DIM, TINY_LLM, make_tiny_model_dir
from tests.models.tiny import tiny_codec_config

SR = 16000
# Samples per codec frame of the tiny model, as of every l3se model at 16 kHz.
FRAME_LENGTH = 1280
SAMPLE = DecodeConfig(strategy="sample", temperature=1.0, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def enh(model_dir):
    torch.manual_seed(0)
    return Enhancer.from_pretrained(model_dir, device="cpu")


def noisy(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = speech_like(rng, seconds)
    return (x + 0.05 * rng.standard_normal(len(x))).astype(np.float32)


def test_loads_on_cpu_in_fp32(enh):
    assert enh.device.type == "cpu" and enh.dtype == torch.float32
    assert (enh.sample_rate, enh.frame_length) == (SR, FRAME_LENGTH)
    assert not enh.lm.training and not enh.ni_encoder.training
    # The codec's own encoder is not needed to decode and is dropped.
    assert not hasattr(enh.codec, "ssl") and hasattr(enh.codec, "decoder")


@pytest.mark.parametrize("n", [1000, FRAME_LENGTH, 5 * FRAME_LENGTH + 17, 16000])
def test_output_has_the_input_length(enh, n):
    y = enh.enhance(noisy(1.1)[:n], SR)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (n,)
    assert np.isfinite(y).all() and np.abs(y).max() > 0


def test_resamples_and_downmixes(enh):
    rng = np.random.default_rng(1)
    stereo = np.stack([speech_like(rng, 1.3, sr=44100), speech_like(rng, 1.3, sr=44100)])
    y = enh.enhance(stereo, 44100)
    mono16 = resample(stereo.mean(0), 44100, SR)
    assert y.shape == mono16.shape and abs(len(y) - round(stereo.shape[1] * SR / 44100)) <= 1
    np.testing.assert_array_equal(y, enh.enhance(mono16, SR))
    t = enh.enhance(torch.from_numpy(stereo), 44100)
    assert isinstance(t, torch.Tensor)
    np.testing.assert_array_equal(t.numpy(), y)


def test_batch_equals_one_by_one(enh):
    x = noisy(2.0, seed=2)
    # Four lengths, three codec frame counts (20001 and 20100 share one): one generate call
    # decodes them all left-padded, and each output equals the item enhanced alone.
    items = [x[:32000], x[:20001], x[:9000], x[200:20300]]
    calls = []

    def spy(lm, prefix, frame_lengths, *args, **kwargs):
        calls.append(frame_lengths.tolist())
        return generate(lm, prefix, frame_lengths, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("l3se.decoding.generate", spy)
        batched = enh.enhance_batch([(w, SR) for w in items], chunks_per_batch=4)
    assert len(calls) == 1 and sorted(calls[0]) == [8, 16, 16, 25]
    for w, y in zip(items, batched):
        assert y.shape == w.shape
        np.testing.assert_allclose(y, enh.enhance(w, SR), atol=1e-5)


def test_bad_inputs_are_value_errors(enh):
    with pytest.raises(ValueError, match="empty"):
        enh.enhance(np.zeros(0, np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        enh.enhance(np.full(2000, np.nan, np.float32), SR)
    with pytest.raises(ValueError, match="shape"):
        to_mono(np.zeros((1, 2, 100), np.float32), SR, SR)


@pytest.mark.parametrize("n", [1, 9 * FRAME_LENGTH, 9 * FRAME_LENGTH + 1, 50_000, 123_457])
@pytest.mark.parametrize("chunk,overlap", [(8, 2), (8, 4), (4, 0), (3, 1)])
def test_chunk_plan(n, chunk, overlap):
    chunk, overlap = chunk * FRAME_LENGTH, overlap * FRAME_LENGTH
    spans = plan_chunks(n, chunk, overlap, FRAME_LENGTH)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a % FRAME_LENGTH == 0 and 0 < b - a <= chunk for a, b in spans)
    for (a0, b0), (a1, _) in zip(spans, spans[1:]):
        assert a0 < a1 <= b0  # contiguous coverage
        assert b0 - a1 == min(overlap, n - a1)
    for (_, b0), (a2, _) in zip(spans, spans[2:]):
        assert a2 >= b0  # no sample in three chunks
    lengths = [b - a for a, b in spans[:-1]]
    assert not lengths or max(lengths) - min(lengths) == 0


def test_chunk_plan_rejects_bad_settings():
    with pytest.raises(ValueError, match="multiples"):
        plan_chunks(10_000, 1000, 0, FRAME_LENGTH)
    with pytest.raises(ValueError, match="overlap"):
        plan_chunks(10_000, 2 * FRAME_LENGTH, 2 * FRAME_LENGTH, FRAME_LENGTH)


def test_crossfade_is_seamless_on_smooth_signals():
    n, chunk, overlap = 40_000, 8 * FRAME_LENGTH, 2 * FRAME_LENGTH
    t = torch.arange(n) / SR
    x = torch.sin(2 * torch.pi * 3 * t)
    spans = plan_chunks(n, chunk, overlap, FRAME_LENGTH)
    assert len(spans) > 3
    # Chunks that agree come back exactly.
    torch.testing.assert_close(crossfade([x[a:b] for a, b in spans], spans, overlap), x)
    # Chunks that disagree by an offset are blended smoothly instead of stepping at the seam.
    pieces = [x[a:b] + 0.2 * i for i, (a, b) in enumerate(spans)]
    y = crossfade(pieces, spans, overlap)
    smooth_step = (x[1:] - x[:-1]).abs().max()
    assert (y[1:] - y[:-1]).abs().max() < smooth_step + 0.2 * torch.pi / overlap
    hard = torch.cat([p[: spans[i + 1][0] - a] if i + 1 < len(spans) else p
                      for i, (p, (a, _)) in enumerate(zip(pieces, spans))])
    assert (hard[1:] - hard[:-1]).abs().max() > smooth_step + 0.15
    # Outside the overlaps each chunk is taken as it is.
    a1, b0 = spans[1][0], spans[0][1]
    torch.testing.assert_close(y[:a1], pieces[0][:a1])
    torch.testing.assert_close(y[b0 : spans[2][0]], pieces[1][b0 - a1 : spans[2][0] - a1])


def test_long_inputs_are_chunked(model_dir):
    enh = Enhancer.from_pretrained(model_dir, device="cpu")
    enh.cfg.chunk_seconds, enh.cfg.overlap_seconds = 0.64, 0.16  # 8 frames, 2 overlapping
    x = noisy(2.5, seed=3)
    calls = []
    y = enh.enhance(x, SR, progress=lambda done, total: calls.append((done, total)))
    spans = plan_chunks(len(x), enh.chunk_samples, enh.overlap_samples, FRAME_LENGTH)
    assert y.shape == x.shape and len(spans) == 5
    assert calls[-1] == (5, 5) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    # Away from the overlaps the output is the chunk's own enhancement.
    (a0, b0), (a1, b1) = spans[:2]
    first = enh.enhance(x[a0:b0], SR)
    np.testing.assert_allclose(y[:a1], first[:a1], atol=1e-5)
    second = enh.enhance(x[a1:b1], SR)
    np.testing.assert_allclose(y[b0 : spans[2][0]], second[b0 - a1 : spans[2][0] - a1], atol=1e-5)
    # No click at the seams: where chunks start and stop contributing, the steps are typical
    # steps of this (noise-like) output, and the blend inside the overlaps is no rougher.
    steps = np.abs(np.diff(y))
    overlaps = np.zeros_like(steps, dtype=bool)
    edges = []
    for (a, _), (_, b) in zip(spans[1:], spans):
        overlaps[a - 1 : b] = True
        edges += [a - 1, b - 1]
    assert steps[edges].max() <= np.quantile(steps[~overlaps], 0.999)
    assert steps[overlaps].mean() <= 1.5 * steps[~overlaps].mean()


def test_chunks_follow_the_trained_length(tmp_path, monkeypatch):
    # An LM trained on 0.96 s (12 frames) never decodes more at once; a saved chunk_seconds
    # (what models from before trained_seconds carry) still decides.
    path = make_tiny_model_dir(tmp_path / "m", trained_seconds=0.96, overlap_seconds=0.16)
    enh = Enhancer.from_pretrained(path, device="cpu")
    decoded = []
    enhance_tensor = enh.enhance_tensor

    def spy(wavs, **settings):
        decoded.extend(len(w) for w in wavs)
        return enhance_tensor(wavs, **settings)

    monkeypatch.setattr(enh, "enhance_tensor", spy)
    x = noisy(2.5, seed=5)
    assert enh.enhance(x, SR).shape == x.shape
    assert len(decoded) == 3 and max(decoded) == 12 * FRAME_LENGTH
    saved = replace(read_config(path), chunk_seconds=20.0)
    assert Enhancer(enh.ni_encoder, enh.lm, enh.codec, saved, device="cpu").chunk_samples == SR * 20
    # Without either length: the chunks of before.
    assert Enhancer(enh.ni_encoder, enh.lm, enh.codec, device="cpu").chunk_samples == SR * 20


def test_seeded_sampling(model_dir, enh):
    x = noisy(1.0, seed=4)
    a = enh.enhance(x, SR, decode=SAMPLE)
    b = Enhancer.from_pretrained(model_dir, device="cpu").enhance(x, SR, decode=SAMPLE)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - enh.enhance(x, SR, decode=replace(SAMPLE, seed=4))).max() > 1e-3
    assert np.abs(a - enh.enhance(x, SR)).max() > 1e-3


def test_per_call_settings_leave_the_model_as_loaded(model_dir, enh, monkeypatch):
    saved = read_config(model_dir)
    sizes = []
    run = Enhancer.enhance_tensor
    monkeypatch.setattr(Enhancer, "enhance_tensor",
                        lambda self, wavs, **kw: sizes.append(len(wavs)) or run(self, wavs, **kw))
    items = [(noisy(0.5, seed=s), SR) for s in range(5)]
    enh.enhance_batch(items, decode=SAMPLE, mode="direct", chunks_per_batch=2)
    assert sizes == [2, 2, 1]
    sizes.clear()
    enh.enhance_batch(items)
    assert sizes == [5] and saved.chunks_per_batch == 8
    assert enh.cfg == saved
    with pytest.raises(ValueError, match="chunks_per_batch"):
        enh.enhance_batch(items, chunks_per_batch=0)


def test_a_model_saved_with_batch_size_still_loads(tmp_path):
    """Model directories written before the setting was named chunks_per_batch."""
    (tmp_path / CONFIG_FILE).write_text("mode: lm\nbatch_size: 3\n")
    assert read_config(tmp_path).chunks_per_batch == 3
    (tmp_path / CONFIG_FILE).write_text("decode:\n  top_p: 0\n")
    with pytest.raises(ConfigError, match="top_p must be in"):
        read_config(tmp_path)


def test_model_dir_errors(tmp_path, model_dir, monkeypatch):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        Enhancer.from_pretrained(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "enhancer.yaml").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match="missing ni_encoder, lm, codec"):
        check_model_dir(tmp_path / "half")
    monkeypatch.setattr(enhancer_mod, "DEFAULT_MODEL_DIR", tmp_path / "default")
    with pytest.raises(FileNotFoundError, match="l3se recipe quickstart"):
        check_model_dir(tmp_path / "default")
    with pytest.raises(ValueError, match="unknown device"):
        Enhancer.from_pretrained(model_dir, device="gpu0")
    with pytest.raises(ValueError, match="unknown dtype"):
        Enhancer.from_pretrained(model_dir, device="cpu", dtype="int8")


def test_item_seeds_follow_the_audio_and_the_base_seed():
    a, b = torch.from_numpy(noisy(0.5, seed=5)), torch.from_numpy(noisy(0.5, seed=6))
    assert item_seed(0, a) == item_seed(0, a.clone()) == item_seed(0, a.double())
    assert len({item_seed(0, a), item_seed(0, b), item_seed(1, a), item_seed(-1, a)}) == 4
    assert 0 <= item_seed(0, a) < 2**63


def test_sampling_follows_each_file_not_its_batch(enh):
    x, y = noisy(1.2, seed=7), noisy(1.2, seed=8)[:18000]  # the same codec frame count
    out = enh.enhance_batch([(x, SR), (y, SR), (x, SR)], decode=SAMPLE)
    # One generator for the batch gave the two copies of x different draws.
    np.testing.assert_array_equal(out[0], out[2])
    assert np.abs(out[0][: len(y)] - out[1]).max() > 1e-3
    for w, o in zip((y, x), enh.enhance_batch([(y, SR), (x, SR)], decode=SAMPLE)):
        np.testing.assert_allclose(o, enh.enhance(w, SR, decode=SAMPLE), atol=1e-5)
    np.testing.assert_allclose(out[0], enh.enhance(x, SR, decode=SAMPLE), atol=1e-5)
    np.testing.assert_allclose(out[1], enh.enhance(y, SR, decode=SAMPLE), atol=1e-5)


def test_a_deaf_lm_still_gives_each_file_its_own_draws(model_dir):
    """Issue 14: an LM that ignores its prefix sampled the same codes for every file of a length
    when all files shared one seed."""
    enh = Enhancer.from_pretrained(model_dir, device="cpu")
    for adapter in (enh.lm.acoustic_adapter, enh.lm.semantic_adapter):
        torch.nn.init.zeros_(adapter.net[-1].weight)
        torch.nn.init.zeros_(adapter.net[-1].bias)
    x, y = noisy(0.8, seed=12), noisy(0.8, seed=13)
    out_x = enh.enhance(x, SR, decode=SAMPLE)
    assert np.abs(out_x - enh.enhance(y, SR, decode=SAMPLE)).max() > 1e-3
    np.testing.assert_array_equal(out_x, enh.enhance(x, SR, decode=SAMPLE))


def codec_as_encoder():
    """(codec, an acoustic-only NI-Encoder that is the codec's own encoder, an LM for it)."""
    torch.manual_seed(0)
    codec = WavCodec(tiny_codec_config()).eval()
    ni = NIEncoder.from_teachers(codec, semantic=False)
    lm = SpeechLM(SpeechLMConfig(
        llm=LLMConfig(pretrained=None, arch=TINY_LLM), prefix="acoustic", acoustic_dim=DIM,
        semantic_dim=None, adapter_hidden=2 * DIM, n_codebooks=codec.cfg.n_codebooks,
        codebook_size=codec.cfg.codebook_size,
    ))
    return codec, ni, lm


def test_direct_mode_is_the_codec_resynthesis_of_its_encoder():
    codec, ni, lm = codec_as_encoder()
    enh = Enhancer(ni, lm, codec, EnhancerConfig(mode="direct"), device="cpu")
    x = noisy(1.0, seed=9)[:15000]
    y = enh.enhance(x, SR)
    with torch.no_grad():
        wav = torch.from_numpy(x)[None]
        resynth = codec.decode(codec.encode(wav, torch.tensor([len(x)])), len(x))[0]
    assert y.shape == x.shape
    np.testing.assert_allclose(y, resynth.numpy(), atol=1e-5)


def test_direct_mode(enh):
    x, other = noisy(1.3, seed=10), noisy(1.3, seed=11)
    y = enh.enhance(x, SR, mode="direct")
    assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() > 0
    np.testing.assert_array_equal(y, enh.enhance(x, SR, mode="direct"))
    assert np.abs(y - enh.enhance(x, SR)).max() > 1e-3
    assert np.abs(y - enh.enhance(other, SR, mode="direct")).max() > 1e-3
    batched = enh.enhance_batch([(x[:5000], SR), (x, SR)], mode="direct")
    assert batched[0].shape == (5000,)
    np.testing.assert_allclose(batched[1], y, atol=1e-5)


def test_bad_modes_are_value_errors(enh):
    with pytest.raises(ValueError, match="unknown mode 'beam'"):
        enh.enhance(noisy(0.2), SR, mode="beam")
    _, ni, lm = codec_as_encoder()
    other_codec = WavCodec(tiny_codec_config(dim=2 * DIM))
    with pytest.raises(ValueError, match="no such path"):
        Enhancer(ni, lm, other_codec, EnhancerConfig(mode="direct"), device="cpu")


def test_enhance_tensor_steps(enh):
    x = torch.from_numpy(noisy(1.0, seed=6))
    wavs = [x[:12800], x[:12000], x[:2560], x[:12801]]  # 10, 10, 2 and 11 codec frames
    assert enh._frame_groups(wavs) == [[0, 1], [2], [3]]
    assert enh._frame_aligned_samples(0.9) == 11 * FRAME_LENGTH  # 11.25 frames, in samples
    seeds = enh._seeds(wavs, SAMPLE)
    assert seeds == [item_seed(SAMPLE.seed, w) for w in wavs] and enh._seeds(wavs, DecodeConfig()) is None
    with torch.inference_mode():
        feats = [enh._encode([wavs[i] for i in rows]) for rows in enh._frame_groups(wavs)]
        codes = enh._generate(feats, DecodeConfig(), None)
        assert [tuple(c.shape) for c in codes] == [(2, 8, 10), (1, 8, 2), (1, 8, 11)]
        audio = enh._decode_audio(codes[0], [12800, 12000])
    assert [len(a) for a in audio] == [12800, 12000]
    np.testing.assert_array_equal(audio[1].numpy(), enh.enhance_tensor(wavs)[1].numpy())


def test_the_enhancer_owns_its_decoding_state(enh, model_dir, monkeypatch):
    engines = []

    def spy(*args, engine=None, **kwargs):
        engines.append(engine)
        return generate(*args, engine=engine, **kwargs)

    monkeypatch.setattr("l3se.decoding.generate", spy)
    enh.enhance(noisy(0.5), SR)
    enh.enhance(noisy(0.3), SR)
    assert engines == [enh.decoding, enh.decoding]
    assert enh.decoding.threads == 1  # the token loop's CPU threads
    own = Enhancer.from_pretrained(model_dir, device="cpu", cuda_graphs=False, decode_threads=2)
    assert (own.decoding.cuda_graphs, own.decoding.threads) == (False, 2)
    own.free()
    assert own.decoding.graphs == 0
