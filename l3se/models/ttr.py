"""The Timed-Text Regularizer (TTR, seeds 000/001): a codec objective that asks the decoded speech
to carry the words of the input's aligned transcript.

A summariser, pretrained by the ``ttr`` stage and then frozen, turns speech plus the time span of
each subword into one vector per subword, regressed onto the vectors a frozen text encoder (BERT)
gives the same subwords:

    wav -> WavLM (frozen) -> hidden state ``layer`` [T50, H] -> Linear H -> D
    per subword: [CLS, its frames] -> Transformer x4 -> CLS output        (one vector per subword)
    per utterance: subword vectors -> Transformer x4 -> Linear D -> E    ~ text encoder [N, E]

Word spans come from forced alignment (the seed used the Montreal Forced Aligner; the offline
corpus has estimates, ``data_sim.word_times``); a word's span is split uniformly over its
subwords. The loss per utterance is ``1 - mean cos(pred, target)`` plus the MSE between the two
N x N matrices of pairwise cosines. In codec-3, ``TTRLoss`` scores the codec's reconstruction
with the frozen summariser against the text vectors of the input's words (seed weight 30 against
mel 45; l3se's mel weight is 15, so 10).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from l3se.config import load_config, save_config
from l3se.models.codec_objectives import CodecObjective, CodecStep, ObjectiveOutput, WordTimes
from l3se.models.frozen import freeze
from l3se.models.ssl import SSLConfig, WavLMBackbone, valid_frames
from l3se.models.tokenizer import load_tokenizer
from l3se.models.weights import CONFIG_FILE, WEIGHTS_FILE, load_weights, save_weights

PAPER_BERT = "bert-base-uncased"
TOKENIZER_DIR = "tokenizer"
FRAME_RATE = 50.0  # WavLM frames per second at 16 kHz (hop 320)

# bert-base-uncased's architecture, so that the paper summariser builds without the hub.
BERT_BASE: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}
# vocab_size comes from the tokenizer it is paired with.
BERT_TINY: dict[str, Any] = {
    "model_type": "bert",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
}
TEXT_PRESETS = {"base": BERT_BASE, "tiny": BERT_TINY}


@dataclass
class TextVectorConfig:
    # Hub name or local folder of a BERT-like encoder (transformers.AutoModel); null builds
    # ``arch`` with random weights. Offline that is all there is: its vectors are then random but
    # fixed functions of the text (seeded below), which a summariser can still learn to predict
    # from speech, so the whole TTR pipeline runs and is tested without the hub; what they mean
    # linguistically comes only with a pretrained encoder.
    pretrained: str | None = PAPER_BERT
    # "base", "tiny", or config fields (with model_type); only used when ``pretrained`` is null.
    arch: str | dict = "base"
    # Hub name or saved folder (transformers.AutoTokenizer; a fast tokenizer, for its offsets).
    tokenizer: str = PAPER_BERT
    # Seed of the random encoder's initialisation: resuming must rebuild the same targets.
    seed: int = 0
    # Subword tokens per utterance (specials included); words past it get no target.
    max_tokens: int = 512


class TextEncoder(nn.Module):
    """Frozen, always in eval mode: words -> one vector per subword, and how many subwords each
    word got. The tokenizer is loaded when first needed, so a model whose vocabulary is known
    builds without it (e.g. on the meta device)."""

    def __init__(self, cfg: TextVectorConfig, vocab_size: int | None = None, tokenizer=None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.cfg = cfg
        self._tokenizer = tokenizer
        if cfg.pretrained:
            self.model = AutoModel.from_pretrained(cfg.pretrained, dtype=torch.float32)
        else:
            arch = dict(TEXT_PRESETS[cfg.arch] if isinstance(cfg.arch, str) else cfg.arch)
            if vocab_size is not None:
                arch["vocab_size"] = vocab_size
            elif "vocab_size" not in arch:
                arch["vocab_size"] = len(self.tokenizer)
            conf = AutoConfig.for_model(**arch)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.model = AutoModel.from_config(conf)
        freeze(self)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.tokenizer)
            if not self._tokenizer.is_fast:
                raise ValueError(f"tokenizer {self.cfg.tokenizer} is not a fast tokenizer: "
                                 "subwords are matched to words by character offsets")
        return self._tokenizer

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def arch(self) -> dict:
        """The encoder's full config as plain data: rebuilds it without the hub."""
        import json

        return json.loads(self.model.config.to_json_string(use_diff=False))

    @torch.no_grad()
    def forward(self, words: list[list[str]]) -> tuple[list[torch.Tensor], list[list[int]]]:
        """B word lists -> (B tensors [N_b, E] of subword vectors, in order; B lists of subword
        counts per word, summing to N_b). Specials ([CLS], [SEP]) are dropped, as in the seed."""
        texts = [" ".join(w) for w in words]
        limit = min(self.cfg.max_tokens, self.model.config.max_position_embeddings)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=limit,
                             return_offsets_mapping=True, return_special_tokens_mask=True,
                             return_tensors="pt")
        ids = enc["input_ids"]
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"tokenizer {self.cfg.tokenizer} has ids beyond the text encoder's "
                             f"{self.vocab_size}: it is not the tokenizer it was built for")
        dev = self.model.device
        hidden = self.model(input_ids=ids.to(dev),
                            attention_mask=enc["attention_mask"].to(dev)).last_hidden_state
        keep = enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()
        vectors, counts = [], []
        for b, ws in enumerate(words):
            # Character index just past each word of " ".join(ws).
            ends = [e - 1 for e in itertools.accumulate(len(w) + 1 for w in ws)]
            count = [0] * len(ws)
            rows = []
            for t in torch.nonzero(keep[b]).flatten().tolist():
                start, end = enc["offset_mapping"][b, t].tolist()
                if end <= start:
                    continue
                # A token belongs to the word holding its last character; a byte-level BPE's
                # leading space goes with the word it precedes.
                word = bisect.bisect_right(ends, end - 1)
                if word < len(ws):
                    count[word] += 1
                    rows.append(t)
            vectors.append(hidden[b, rows].float())
            counts.append(count)
        return vectors, counts


def subword_spans(words: WordTimes, counts: list[int]) -> list[tuple[float, float]]:
    """Each word's (start, end) split uniformly over its ``counts`` subwords, in order (a word
    with no subword gives none)."""
    spans = []
    for (_, start, end), n in zip(words, counts):
        step = (end - start) / n if n else 0.0
        spans.extend((start + i * step, start + (i + 1) * step) for i in range(n))
    return spans


def span_frames(
    spans: list[tuple[float, float]], num_frames: int, rate: float = FRAME_RATE
) -> list[tuple[int, int]]:
    """Spans in seconds -> half-open frame ranges [a, b) of a ``rate`` Hz sequence of
    ``num_frames`` frames: the frames whose centre ((i + 0.5) / rate) lies in the span. A span
    holding no centre gets the one frame nearest its middle; every range is inside the
    sequence."""
    if num_frames < 1:
        raise ValueError("span_frames needs at least one frame")
    out = []
    for start, end in spans:
        a = max(0, math.ceil(start * rate - 0.5))
        b = min(num_frames, math.ceil(end * rate - 0.5))
        if b <= a:
            a = min(max(0, math.floor(0.5 * (start + end) * rate)), num_frames - 1)
            b = a + 1
        out.append((a, b))
    return out


def pairwise_cos(x: torch.Tensor) -> torch.Tensor:
    """[N, E] -> [N, N] cosine similarities."""
    x = F.normalize(x, dim=-1, eps=1e-8)
    return x @ x.transpose(-2, -1)


def ttr_parts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One utterance's [N, E] prediction and target -> (1 - mean cos, MSE of the pairwise-cosine
    matrices)."""
    pred, target = pred.float(), target.float()
    cos = F.cosine_similarity(pred, target, dim=-1, eps=1e-8)
    return 1.0 - cos.mean(), F.mse_loss(pairwise_cos(pred), pairwise_cos(target))


def ttr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The seed's criterion for one utterance (both terms weighted 1)."""
    cos_dist, relation = ttr_parts(pred, target)
    return cos_dist + relation


def batch_parts(
    preds: list[torch.Tensor], targets: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(cos distance, relation MSE), each averaged over the utterances with a subword (the seed
    trained one utterance per step); None when there is none."""
    parts = [ttr_parts(p, t) for p, t in zip(preds, targets) if len(t)]
    if not parts:
        return None
    cos, rel = zip(*parts)
    return torch.stack(cos).mean(), torch.stack(rel).mean()


@dataclass
class SummarizerConfig:
    # The summariser's own frozen WavLM (codec-2's, through the ttr stage's backbone_from).
    ssl: SSLConfig = field(default_factory=SSLConfig)
    # Hidden state read (0: the CNN features entering layer 1, i: layer i's output); null: the
    # last. The seed read layer 10 of WavLM-Base; the layers above it are never run.
    layer: int | None = 10
    # The seed's two Transformers: d 768 (WavLM-Base's and BERT's width), 8 heads, ff 1024,
    # GELU, post-norm, dropout 0.1, 4 layers each.
    dim: int = 768
    num_heads: int = 8
    ff_dim: int = 1024
    subword_layers: int = 4
    sequence_layers: int = 4
    dropout: float = 0.1
    text: TextVectorConfig = field(default_factory=TextVectorConfig)
    # Rows of a randomly built text encoder's embedding; null: the arch's, else the tokenizer's
    # length. A pretrained encoder keeps its own.
    vocab_size: int | None = None


def _transformer(cfg: SummarizerConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                       activation="gelu", batch_first=True, norm_first=False)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class Summarizer(nn.Module):
    """See the module docstring. ``forward(wav, lengths, words)`` -> (predictions, targets), one
    [N_b, E] pair per utterance."""

    def __init__(self, cfg: SummarizerConfig, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        # Frozen whatever the config says: the summariser and codec-3 read codec-2's WavLM as
        # it is (a frozen backbone still passes a judged waveform's gradient back).
        self.ssl = WavLMBackbone(dataclasses.replace(cfg.ssl, frozen=True))
        states = self.ssl.num_hidden_states
        self.layer = states - 1 if cfg.layer is None else cfg.layer
        if not 0 <= self.layer < states:
            raise ValueError(f"layer {cfg.layer}: the WavLM has hidden states 0..{states - 1}")
        # The layers above the one read would only cost time (14 of WavLM-Large's 24).
        encoder = self.ssl.model.encoder
        encoder.layers = encoder.layers[: max(self.layer, 1)]
        self.text = TextEncoder(cfg.text, cfg.vocab_size, tokenizer)
        self.inp = nn.Linear(self.ssl.hidden_size, cfg.dim)
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.subword = _transformer(cfg, cfg.subword_layers)
        self.sequence = _transformer(cfg, cfg.sequence_layers)
        self.out = nn.Linear(cfg.dim, self.text.dim)
        self.train(False)

    def targets(self, words: list[WordTimes]) -> tuple[list[torch.Tensor], list[list]]:
        """B aligned word lists -> (B text-vector targets [N_b, E], B lists of N_b subword spans
        in seconds)."""
        vectors, counts = self.text([[w for w, _, _ in ws] for ws in words])
        return vectors, [subword_spans(ws, c) for ws, c in zip(words, counts)]

    def summarize(
        self, wav: torch.Tensor, lengths: torch.Tensor | None, spans: list[list[tuple]]
    ) -> list[torch.Tensor]:
        """wav [B, S], lengths [B], B lists of subword spans (seconds) -> B [N_b, E]."""
        hop = self.ssl.hop
        n = math.ceil(wav.shape[-1] / hop)
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1], device=wav.device)
        feats = self.ssl(F.pad(wav, (0, n * hop - wav.shape[-1])), lengths)[self.layer]
        feats = self.inp(feats)
        frames = valid_frames(lengths, hop).clamp(1, n).tolist()
        segments, counts = [], []
        for b, sp in enumerate(spans):
            ranges = span_frames(sp, frames[b]) if sp else []
            segments.extend(feats[b, a:z] for a, z in ranges)
            counts.append(len(ranges))
        empty = feats.new_zeros(0, self.out.out_features)
        if not segments:
            return [empty for _ in spans]
        sizes = torch.tensor([len(s) for s in segments], device=feats.device)
        x = pad_sequence(segments, batch_first=True)
        x = torch.cat([self.cls.to(x.dtype).expand(len(segments), 1, -1), x], dim=1)
        # Unlike the seed, whose zero padding was attended to, padded frames are masked.
        pad = torch.arange(x.shape[1], device=x.device)[None] > sizes[:, None]
        summary = self.subword(x, src_key_padding_mask=pad)[:, 0]
        groups = [g for g in torch.split(summary, counts) if len(g)]
        used = torch.tensor([len(g) for g in groups], device=feats.device)
        y = pad_sequence(groups, batch_first=True)
        pad = torch.arange(y.shape[1], device=y.device)[None] >= used[:, None]
        y = self.out(self.sequence(y, src_key_padding_mask=pad))
        rows = iter(range(len(groups)))
        return [y[next(rows), :c] if c else empty for c in counts]

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None, words: list[WordTimes]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(words) != wav.shape[0]:
            raise ValueError(f"{wav.shape[0]} waveforms but {len(words)} word lists")
        targets, spans = self.targets(words)
        return self.summarize(wav, lengths, spans), targets

    # ---- sharing and saving ----------------------------------------------------------------

    def load_backbone_from(self, codec) -> None:
        """Copy a WavCodec's WavLM (a module or a saved ``from_pretrained`` folder) into
        ``self.ssl``, less the layers above ``layer``."""
        from l3se.models.codec import copy_wavlm

        copy_wavlm(codec, self.ssl)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.yaml`` + ``model.safetensors`` + ``tokenizer/``; WavLM and the text
        encoder are stored with their architectures, so loading needs no hub."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.text.tokenizer.save_pretrained(str(path / TOKENIZER_DIR))
        # Only the layers run are stored.
        arch = {**self.ssl.arch(), "num_hidden_layers": len(self.ssl.model.encoder.layers)}
        cfg = dataclasses.replace(
            self.cfg,
            ssl=dataclasses.replace(self.cfg.ssl, pretrained=None, arch=arch),
            text=dataclasses.replace(self.cfg.text, pretrained=None, arch=self.text.arch(),
                                     tokenizer=str((path / TOKENIZER_DIR).resolve())),
            vocab_size=self.text.vocab_size,
        )
        save_config(cfg, path / CONFIG_FILE)
        save_weights(self, path / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> Summarizer:
        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR):
            if not (path / name).exists():
                raise FileNotFoundError(f"{path} is not a saved Summarizer: {name} is missing")
        cfg = load_config(SummarizerConfig, path / CONFIG_FILE)
        # The folder may have moved since it was saved: its own tokenizer wins.
        cfg.text.tokenizer = str(path / TOKENIZER_DIR)
        model = cls(cfg)
        load_weights(model, path / WEIGHTS_FILE)
        return model.to(device)


@dataclass
class TTRLossConfig:
    # Against mel 15: the seed's 30 against mel 45, scaled to l3se's mel weight.
    weight: float = 10.0
    # The seed's coeff1 (1 - mean cos) and coeff2 (pairwise-cosine MSE).
    cos_weight: float = 1.0
    relation_weight: float = 1.0


class TTRLoss(CodecObjective):
    """The frozen summariser scores ``step.recon`` of every item with word timings against the
    text vectors of its words; items without timings are skipped (zero loss when none has
    them)."""

    name = "ttr"

    def __init__(self, cfg: TTRLossConfig, summarizer: Summarizer):
        super().__init__()
        self.cfg = cfg
        self.summarizer = summarizer
        freeze(self.summarizer)

    def forward(self, step: CodecStep) -> ObjectiveOutput:
        items = [i for i, w in enumerate(step.words) if w]
        zero = step.recon.new_zeros(())
        # Every call logs the same keys (every rank must), counted by the utterances scored.
        nothing = ObjectiveOutput(loss=zero, logs=dict.fromkeys(("loss", "cos", "relation"), zero),
                                  counts=dict.fromkeys(("loss", "cos", "relation"), zero))
        if not items:
            return nothing
        words = [step.words[i] for i in items]
        index = torch.tensor(items, device=step.recon.device)
        targets, spans = self.summarizer.targets(words)
        preds = self.summarizer.summarize(step.recon[index], step.lengths[index], spans)
        parts = batch_parts(preds, targets)
        if parts is None:
            return nothing
        cos_dist, relation = parts
        total = self.cfg.cos_weight * cos_dist + self.cfg.relation_weight * relation
        logs = {"loss": total.detach(), "cos": (1.0 - cos_dist).detach(),
                "relation": relation.detach()}
        scored = step.recon.new_tensor(float(sum(len(t) > 0 for t in targets)))
        return ObjectiveOutput(loss=self.cfg.weight * total, logs=logs,
                               counts=dict.fromkeys(logs, scored))
