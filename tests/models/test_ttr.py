import numpy as np
import pytest
import torch

from l3se.models.codec_objectives import CodecStep
from l3se.models.ssl import SSLConfig
from l3se.models.tokenizer import build_tokenizer
from l3se.models.ttr import (
    Summarizer,
    SummarizerConfig,
    TextVectorConfig,
    TTRLoss,
    TTRLossConfig,
    span_frames,
    subword_spans,
    ttr_loss,
)
from tests.conftest import speech_like

WORDS = [
    [("hello", 0.05, 0.40), ("world", 0.45, 0.80), ("xylophone", 0.85, 1.20)],
    [("the", 0.0, 0.1), ("fox", 0.1, 0.5)],
    [],
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(["HELLO WORLD", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"] * 3, out, 300)
    return out


def tiny_config(tokenizer_dir, layer=None) -> SummarizerConfig:
    return SummarizerConfig(
        ssl=SSLConfig(pretrained=None, arch="tiny"), layer=layer, dim=32, num_heads=4, ff_dim=64,
        subword_layers=1, sequence_layers=1, dropout=0.1,
        text=TextVectorConfig(pretrained=None, arch="tiny", tokenizer=str(tokenizer_dir)),
    )


@pytest.fixture(scope="module")
def summarizer(tokenizer_dir):
    torch.manual_seed(0)
    return Summarizer(tiny_config(tokenizer_dir))


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(0)
    wavs = [torch.from_numpy(speech_like(rng, s)) for s in (1.3, 0.6, 0.4)]
    lengths = torch.tensor([len(w) for w in wavs])
    return torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths


def test_spans_split_words_uniformly_over_subwords():
    spans = subword_spans([("a", 0.0, 0.3), ("b", 0.3, 0.3), ("c", 0.4, 0.6)], [3, 0, 1])
    assert np.allclose(spans, [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.4, 0.6)])


def test_span_frames_use_frame_centres_and_keep_one_frame():
    # 50 Hz: frame i is centred on (i + 0.5) * 20 ms.
    assert span_frames([(0.0, 0.1), (0.1, 0.15)], 100) == [(0, 5), (5, 7)]
    # Too short to hold a centre: the frame nearest its middle.
    assert span_frames([(0.021, 0.025), (0.3, 0.3)], 100) == [(1, 2), (15, 16)]
    # Past the end of the audio: clipped, never empty.
    assert span_frames([(1.9, 2.5), (3.0, 3.2)], 100) == [(95, 100), (99, 100)]


def test_text_targets_count_subwords_per_word(summarizer):
    targets, spans = summarizer.targets(WORDS)
    vectors, counts = summarizer.text([[w for w, _, _ in ws] for ws in WORDS])
    assert [len(t) for t in targets] == [sum(c) for c in counts] == [len(s) for s in spans]
    assert all(c >= 1 for c in counts[0] + counts[1]) and counts[2] == []
    assert targets[0].shape[1] == summarizer.text.dim
    # Random but fixed: a second encoder from the same config gives the same vectors.
    again = Summarizer(summarizer.cfg).text([[w for w, _, _ in ws] for ws in WORDS])[0]
    assert all(torch.equal(a, b) for a, b in zip(vectors, again))


def test_summarizer_shapes(summarizer, audio):
    wav, lengths = audio
    preds, targets = summarizer(wav, lengths, WORDS)
    assert [p.shape for p in preds] == [t.shape for t in targets]
    assert preds[2].shape == (0, summarizer.text.dim)


def test_each_row_is_its_subword_summarised_alone(summarizer, audio):
    """Each output row against the summariser's own modules run on one subword's frames alone,
    then on one utterance's subword summaries alone: no frame of a subword lost or borrowed, no
    row reading another utterance, another subword's padding or the batch's."""
    wav, lengths = audio  # 1.3, 0.6 and 0.4 s: 65, 30 and 20 frames at 50 Hz
    spans = [[(0.0, 0.1), (0.1, 0.3), (0.4, 0.42), (1.0, 1.3)], [], [(0.0, 0.4)]]
    # The frames whose centres ((i + 0.5) / 50 s) lie in each span.
    ranges = [[(0, 5), (5, 15), (20, 21), (50, 65)], [], [(0, 20)]]
    with torch.no_grad():
        rows = summarizer.summarize(wav, lengths, spans)
        feats = summarizer.inp(summarizer.ssl(wav, lengths)[summarizer.layer])
        for b, item in enumerate(ranges):
            if not item:
                assert rows[b].shape == (0, summarizer.text.dim)
                continue
            alone = [summarizer.subword(torch.cat([summarizer.cls, feats[b:b + 1, a:z]], 1))[:, 0]
                     for a, z in item]
            expected = summarizer.out(summarizer.sequence(torch.cat(alone)[None]))[0]
            torch.testing.assert_close(rows[b], expected, atol=1e-5, rtol=1e-4)


def test_layer_choice_drops_the_layers_above(tokenizer_dir):
    model = Summarizer(tiny_config(tokenizer_dir, layer=1))
    assert model.layer == 1 and len(model.ssl.model.encoder.layers) == 1
    with pytest.raises(ValueError, match="hidden states 0..2"):
        Summarizer(tiny_config(tokenizer_dir, layer=3))


def test_loss_zero_for_identical_vectors_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    assert ttr_loss(x, x.clone()).abs() < 1e-6
    assert ttr_loss(3.0 * x, x).abs() < 1e-6  # scale-free: cosines only
    assert ttr_loss(torch.randn(5, 16), x) > 0.1


def step_of(wav, lengths, words):
    recon = wav.clone().requires_grad_(True)
    return CodecStep(clean=wav, recon=recon, lengths=lengths, codes=torch.zeros(3, 2, 1),
                     quantized=torch.zeros(3, 4, 1), texts=[None] * 3, words=words, step=0)


def test_ttr_loss_reaches_recon_and_leaves_the_summarizer_frozen(tokenizer_dir, audio):
    torch.manual_seed(0)
    summarizer = Summarizer(tiny_config(tokenizer_dir))
    objective = TTRLoss(TTRLossConfig(weight=10.0), summarizer)
    objective.train()
    assert not any(m.training for m in summarizer.modules())
    before = {k: v.clone() for k, v in summarizer.state_dict().items()}
    step = step_of(*audio, [WORDS[0], None, WORDS[1]])
    out = objective(step)
    assert out.loss.requires_grad and out.loss > 0
    assert torch.isclose(out.loss, 10.0 * out.logs["loss"])
    assert set(out.logs) == {"loss", "cos", "relation"}
    opt = torch.optim.SGD([step.recon, *summarizer.parameters()], lr=1.0)
    out.loss.backward()
    opt.step()
    grad = step.recon.grad
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0
    assert grad[1].abs().sum() == 0  # no words: not scored
    assert all(torch.equal(v, summarizer.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in summarizer.parameters())


def test_ttr_loss_is_zero_without_words(summarizer, audio):
    out = TTRLoss(TTRLossConfig(), summarizer)(step_of(*audio, [None, None, []]))
    # The same keys as a scored batch (every rank must log them), counted 0.
    assert out.loss == 0 and set(out.logs) == {"loss", "cos", "relation"}
    assert all(c == 0 for c in out.counts.values())


def test_save_load_round_trip(summarizer, audio, tmp_path):
    summarizer.save_pretrained(tmp_path / "ttr")
    loaded = Summarizer.from_pretrained(tmp_path / "ttr")
    assert len(loaded.ssl.model.encoder.layers) == len(summarizer.ssl.model.encoder.layers)
    wav, lengths = audio
    with torch.no_grad():
        a, ta = summarizer(wav, lengths, WORDS)
        b, tb = loaded(wav, lengths, WORDS)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a + ta, b + tb))


def test_load_backbone_from_codec(tokenizer_dir, tmp_path):
    from l3se.models.codec import WavCodec
    from tests.models.tiny import tiny_codec_config

    codec = WavCodec(tiny_codec_config())
    model = Summarizer(tiny_config(tokenizer_dir, layer=1))
    codec.save_pretrained(tmp_path / "codec")
    model.load_backbone_from(tmp_path / "codec")
    kept = model.ssl.state_dict()
    assert all(torch.equal(v, codec.ssl.state_dict()[k]) for k, v in kept.items())
