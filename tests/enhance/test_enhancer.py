import numpy as np
import pytest
import torch

from data_sim.audio import resample
from l3se import enhancer as enhancer_mod
from l3se.enhancer import (
    FRAME_LENGTH,
    Enhancer,
    check_model_dir,
    crossfade,
    plan_chunks,
    to_mono_16k,
)
from tests.conftest import speech_like
from tests.enhance.tiny_model import make_tiny_model_dir

SR = 16000


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
    # 20001 and 20100 share a codec frame count, so they batch together with different lengths.
    items = [x[:32000], x[:20001], x[:9000], x[200:20300]]
    batched = enh.enhance_batch([(w, SR) for w in items])
    for w, y in zip(items, batched):
        assert y.shape == w.shape
        np.testing.assert_allclose(y, enh.enhance(w, SR), atol=1e-5)


def test_bad_inputs_are_value_errors(enh):
    with pytest.raises(ValueError, match="empty"):
        enh.enhance(np.zeros(0, np.float32), SR)
    with pytest.raises(ValueError, match="NaN"):
        enh.enhance(np.full(2000, np.nan, np.float32), SR)
    with pytest.raises(ValueError, match="shape"):
        to_mono_16k(np.zeros((1, 2, 100), np.float32), SR)


@pytest.mark.parametrize("n", [1, 9 * FRAME_LENGTH, 9 * FRAME_LENGTH + 1, 50_000, 123_457])
@pytest.mark.parametrize("chunk,overlap", [(8, 2), (8, 4), (4, 0), (3, 1)])
def test_chunk_plan(n, chunk, overlap):
    chunk, overlap = chunk * FRAME_LENGTH, overlap * FRAME_LENGTH
    spans = plan_chunks(n, chunk, overlap)
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
        plan_chunks(10_000, 1000, 0)
    with pytest.raises(ValueError, match="overlap"):
        plan_chunks(10_000, 2 * FRAME_LENGTH, 2 * FRAME_LENGTH)


def test_crossfade_is_seamless_on_smooth_signals():
    n, chunk, overlap = 40_000, 8 * FRAME_LENGTH, 2 * FRAME_LENGTH
    t = torch.arange(n) / SR
    x = torch.sin(2 * torch.pi * 3 * t)
    spans = plan_chunks(n, chunk, overlap)
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
    spans = plan_chunks(len(x), enh.chunk_samples, enh.overlap_samples)
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


def test_seeded_sampling(model_dir):
    x = noisy(1.0, seed=4)
    sample = {"strategy": "sample", "temperature": 1.0, "seed": 3}
    a = Enhancer.from_pretrained(model_dir, device="cpu", decode=sample).enhance(x, SR)
    b = Enhancer.from_pretrained(model_dir, device="cpu", decode=sample).enhance(x, SR)
    c = Enhancer.from_pretrained(model_dir, device="cpu", decode={**sample, "seed": 4})
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c.enhance(x, SR)).max() > 1e-3
    assert c.cfg.decode.strategy == "sample" and c.cfg.decode.top_k == 0


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
