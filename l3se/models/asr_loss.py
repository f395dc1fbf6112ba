"""The ASR-consistency loss of codec-3 (seed 000, "From Hallucination to Articulation").

A frozen speech recogniser, the judge, transcribes the codec's clean input greedily; the loss is
the teacher-forced cross-entropy of that transcript (and its eos) given the codec's decoded
audio. The gradient runs through the frozen judge into the waveform, so the codec learns to
keep what the recogniser hears. The transcript is a pseudo-label, so no text is needed; the
``text`` variant scores the ground-truth transcript instead.

Judges: l3se's own WavS2T (stage s2t; ntp or ctc) or a Whisper model from the hub (the seed's
Whisper-tiny). Both expose ``pseudo_labels(wav, lengths)`` and ``text_labels(texts)``, which
return the token sequences to score (eos included where the judge has one), and
``nll(wav, lengths, labels)``, their loss given the audio.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from l3se.models.codec_objectives import CodecObjective, CodecStep, ObjectiveOutput
from l3se.models.frozen import freeze
from l3se.models.llm import cache_kwargs
from l3se.models.s2t import WavS2T

PAPER_WHISPER = "openai/whisper-tiny"
# openai/whisper-tiny's architecture (its config.json), so that a launch check builds the paper
# judge without the hub.
WHISPER_TINY: dict[str, Any] = {
    "vocab_size": 51865,
    "num_mel_bins": 80,
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_layers": 4,
    "decoder_attention_heads": 6,
    "decoder_ffn_dim": 1536,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "activation_function": "gelu",
    "scale_embedding": False,
    "pad_token_id": 50257,
    "bos_token_id": 50257,
    "eos_token_id": 50257,
    "decoder_start_token_id": 50258,
}


@dataclass
class ASRLossConfig:
    # Seed 000 trains with 45 * L1(mel) + 30 * L_ASR; codec-3's mel weight is DAC's 15, so the
    # seed's ratio gives 30 * 15 / 45 = 10.
    weight: float = 10.0
    # pseudo: the judge's greedy transcript of the clean input; text: the ground truth (items
    # without one are left out).
    target: Literal["pseudo", "text"] = "pseudo"
    # s2t: the trained WavS2T of stage s2t; whisper: ``whisper`` from the hub.
    judge: Literal["s2t", "whisper"] = "s2t"
    whisper: str = PAPER_WHISPER
    # transformers.WhisperConfig fields of a randomly initialised Whisper (tests, launch
    # checks); null: load ``whisper`` pretrained.
    whisper_arch: dict[str, Any] | None = None
    # Label tokens per utterance; a longer transcript is cut and gets no eos target: enough for
    # about 16 s of speech (the paper configs raise it with data.max_seconds).
    max_tokens: int = 64
    # Pseudo-labels kept per clip (utterance id, crop): the clean input and the judge never
    # change, so a clip seen again is not decoded again (0: decode every time). Random crops
    # rarely repeat; whole utterances do every epoch.
    label_cache: int = 100_000


def _cut(ids: list[list[int]], limit: int, eos: int) -> list[list[int]]:
    return [t[:limit] + ([eos] if len(t) <= limit else []) for t in ids]


class S2TJudge(nn.Module):
    """A trained WavS2T as the judge. ntp: cross-entropy of the labels and eos through its
    frozen LLM; ctc: the CTC loss of the labels. The model given is frozen in place."""

    def __init__(self, s2t: WavS2T, max_tokens: int):
        super().__init__()
        self.s2t = s2t
        self.max_tokens = max_tokens
        freeze(self)

    @torch.no_grad()
    def pseudo_labels(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        # One token past the cap tells a cut transcript from one that ended there.
        ids = self.s2t.greedy_ids(wav, lengths, self.max_tokens + 1)
        return self.s2t.targets(ids, self.max_tokens)

    def text_labels(self, texts: list[str]) -> list[list[int]]:
        return self.s2t.targets(self.s2t.tokenize(texts), self.max_tokens)

    def nll(
        self, wav: torch.Tensor, lengths: torch.Tensor, labels: list[list[int]]
    ) -> torch.Tensor:
        return self.s2t.target_loss(wav, lengths, labels)


class WhisperJudge(nn.Module):
    """A transformers ``WhisperForConditionalGeneration`` as the judge, prompted for English
    transcription without timestamps (the prompt tokens its generation config defines).

    Whisper's encoder is trained on 30 s windows of zero-padded audio, and HF's encoder refuses
    anything else. This judge instead runs the encoder's own modules on the batch's un-padded
    features: self-attention sees only the batch's frames, not 30 s of trailing silence, and
    the decoder cross-attends to those frames alone. The features themselves are Whisper's
    (``log_mel``). Encoder outputs therefore differ from the padded model's, for the clean
    input's pseudo-label and the decoded audio's loss alike. The crop is what makes the loss
    affordable: for 4 x 3 s at whisper-tiny's size on one CPU thread the encoder took 140 ms
    (forward) and 0.26 s (with backward) against 1.75 s and 6.0 s padded to 30 s.
    """

    def __init__(self, model, feature_extractor, max_tokens: int, name: str, tokenizer=None):
        super().__init__()
        self.model = model
        self.name = name
        self.max_tokens = max_tokens
        self._tokenizer = tokenizer
        self.n_fft = feature_extractor.n_fft
        self.hop = feature_extractor.hop_length
        self.n_samples = feature_extractor.n_samples  # Whisper's 30 s window
        self.register_buffer(
            "mel_filters", torch.from_numpy(feature_extractor.mel_filters).float(), persistent=False
        )
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        config, gen = model.config, model.generation_config
        self.eos = config.eos_token_id
        prompt = [config.decoder_start_token_id]
        # English-only checkpoints and randomly built models have no language or task token.
        if getattr(gen, "lang_to_id", None):
            prompt += [gen.lang_to_id["<|en|>"], gen.task_to_id["transcribe"]]
        if getattr(gen, "no_timestamps_token_id", None) is not None:
            prompt.append(gen.no_timestamps_token_id)
        self.prompt = prompt
        if len(prompt) + max_tokens + 1 > config.max_target_positions:
            raise ValueError(
                f"max_tokens {max_tokens} does not fit Whisper's {config.max_target_positions} "
                "decoder positions"
            )
        # What Whisper's greedy decoding never picks: every id after <|endoftext|> (Whisper's
        # special and timestamp tokens), the generation config's suppressed tokens, and at the
        # first step its begin-suppressed ones (a blank, eos).
        vocab = config.vocab_size
        suppress = torch.zeros(vocab, dtype=torch.bool)
        suppress[self.eos + 1 :] = True
        suppress[[t for t in gen.suppress_tokens or [] if t < vocab]] = True
        begin = suppress.clone()
        begin[[t for t in gen.begin_suppress_tokens or [] if t < vocab]] = True
        self.register_buffer("suppress", suppress, persistent=False)
        self.register_buffer("begin_suppress", begin, persistent=False)
        freeze(self)

    @classmethod
    def from_config(cls, cfg: ASRLossConfig) -> WhisperJudge:
        from transformers import (
            WhisperConfig,
            WhisperFeatureExtractor,
            WhisperForConditionalGeneration,
        )

        if cfg.whisper_arch is not None:
            model = WhisperForConditionalGeneration(WhisperConfig(**cfg.whisper_arch))
            extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        else:
            model = WhisperForConditionalGeneration.from_pretrained(
                cfg.whisper, dtype=torch.float32
            )
            extractor = WhisperFeatureExtractor.from_pretrained(cfg.whisper)
        return cls(model, extractor, cfg.max_tokens, cfg.whisper)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import WhisperTokenizer

            self._tokenizer = WhisperTokenizer.from_pretrained(self.name)
        return self._tokenizer

    # ---- audio -----------------------------------------------------------------------------

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, S] 16 kHz -> [B, n_mels, 2 * ceil(S / 320)]: WhisperFeatureExtractor's first
        frames of the same audio zero-padded to 30 s, differentiably."""
        frames = 2 * math.ceil(wav.shape[-1] / (2 * self.hop))
        with torch.autocast(wav.device.type, enabled=False):
            half = self.n_fft // 2
            # HF zero-pads to 30 s and then centres frames by reflection: the start reflects the
            # signal, the end meets zeros, except within half a window of 30 s, where the last
            # frame reflects the 30 s window's end.
            need = (frames - 1) * self.hop + half
            x = wav.float()
            x = F.pad(x, (0, max(0, min(need, self.n_samples) - x.shape[-1])))
            x = F.pad(x[:, None], (half, max(0, need - x.shape[-1])), mode="reflect")[:, 0]
            spec = torch.stft(
                x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True
            )
            # Not abs() ** 2: abs has no usable gradient at a zero bin (digital silence).
            power = spec.real.square() + spec.imag.square()
            mel = (self.mel_filters.T @ power).clamp_min(1e-10).log10()
            mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)
            return (mel + 4.0) / 4.0

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wav [B, S], lengths [B] -> encoder states [B, ceil(S / 320), D] (see the class
        docstring for the crop). Padding is zeroed, as Whisper's own padding is silence."""
        valid = torch.arange(wav.shape[-1], device=wav.device)[None] < lengths[:, None]
        enc = self.model.model.encoder
        x = F.gelu(enc.conv1(self.log_mel(wav * valid)))
        x = F.gelu(enc.conv2(x)).transpose(1, 2)
        if x.shape[1] > enc.max_source_positions:
            raise ValueError(
                f"{wav.shape[-1]} samples exceed Whisper's {enc.max_source_positions} encoder "
                "positions (30 s)"
            )
        x = x + enc.embed_positions.weight[: x.shape[1]]
        for layer in enc.layers:
            x = layer(x, None)
        return enc.layer_norm(x)

    # ---- labels ----------------------------------------------------------------------------

    @torch.no_grad()
    def pseudo_labels(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        from transformers import DynamicCache, EncoderDecoderCache

        states = self.encode(wav, lengths)
        n = wav.shape[0]
        inputs = torch.tensor([self.prompt] * n, device=wav.device)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        tokens: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool, device=wav.device)
        # One token past the cap tells a cut transcript from one that ended there.
        for step in range(self.max_tokens + 1):
            hidden = self.model.model.decoder(
                input_ids=inputs, encoder_hidden_states=states, **cache_kwargs(cache)
            ).last_hidden_state[:, -1]
            logits = self.model.proj_out(hidden).float()
            banned = self.begin_suppress if step == 0 else self.suppress
            nxt = logits.masked_fill(banned, -math.inf).argmax(-1)
            done = done | (nxt == self.eos)
            if bool(done.all()):
                break
            for i in torch.nonzero(~done).flatten().tolist():
                tokens[i].append(int(nxt[i]))
            inputs = nxt[:, None]
        return _cut(tokens, self.max_tokens, self.eos)

    def text_labels(self, texts: list[str]) -> list[list[int]]:
        # Whisper writes sentence case after a leading space; LibriSpeech is all upper case.
        texts = [" " + (t.strip().capitalize() if t.isupper() else t.strip()) for t in texts]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        if max((max(i, default=-1) for i in ids), default=-1) >= self.model.config.vocab_size:
            raise ValueError(f"tokenizer {self.name} has ids beyond this Whisper's vocabulary")
        return _cut(ids, self.max_tokens, self.eos)

    def nll(
        self, wav: torch.Tensor, lengths: torch.Tensor, labels: list[list[int]]
    ) -> torch.Tensor:
        """Mean cross-entropy of the label tokens given the audio, teacher-forced after the
        prompt. Rows are right-padded, which the causal decoder never attends to."""
        states = self.encode(wav, lengths)
        dev, p = wav.device, len(self.prompt)
        width = p + max(len(y) for y in labels) - 1
        inputs = torch.full((len(labels), width), self.eos, dtype=torch.long, device=dev)
        targets = torch.full((len(labels), width), -100, dtype=torch.long, device=dev)
        for i, y in enumerate(labels):
            row = self.prompt + y[:-1]
            inputs[i, : len(row)] = torch.tensor(row)
            targets[i, p - 1 : p - 1 + len(y)] = torch.tensor(y)
        hidden = self.model.model.decoder(
            input_ids=inputs, encoder_hidden_states=states, use_cache=False
        ).last_hidden_state
        keep = targets >= 0
        logits = self.model.proj_out(hidden[keep])
        return F.cross_entropy(logits.float(), targets[keep])


class ASRConsistencyLoss(CodecObjective):
    """See the module docstring. ``forward`` logs ``ce`` (the judge's unweighted loss: CTC for
    a ctc WavS2T) and ``tokens`` (label tokens scored)."""

    name = "asr"

    def __init__(self, cfg: ASRLossConfig, judge: S2TJudge | WhisperJudge):
        super().__init__()
        self.cfg = cfg
        self.judge = judge
        self._labels: OrderedDict[str, array] = OrderedDict()

    def pseudo_labels(
        self, clean: torch.Tensor, lengths: torch.Tensor, clips: list[str | None]
    ) -> list[list[int]]:
        """The judge's transcripts of ``clean``, decoded only for clips not seen before."""
        known = [c is not None and c in self._labels for c in clips]
        todo = [i for i, k in enumerate(known) if not k]
        fresh: dict[int, list[int]] = {}
        if todo:
            index = torch.tensor(todo, device=clean.device)
            width = int(lengths[index].max())
            decoded = self.judge.pseudo_labels(clean[index, :width], lengths[index])
            fresh = dict(zip(todo, decoded))
        out = []
        for i, clip in enumerate(clips):
            if known[i]:
                self._labels.move_to_end(clip)
                out.append(list(self._labels[clip]))
                continue
            out.append(fresh[i])
            if clip is not None and self.cfg.label_cache > 0:
                self._labels[clip] = array("l", fresh[i])
                if len(self._labels) > self.cfg.label_cache:
                    self._labels.popitem(last=False)
        return out

    def forward(self, step: CodecStep) -> ObjectiveOutput:
        clean, recon, lengths = step.clean, step.recon, step.lengths
        if self.cfg.target == "text":
            keep = [i for i, t in enumerate(step.texts) if t is not None]
            if not keep:
                # Still part of the graph, so every rank's backward looks the same.
                zero = recon.sum() * 0.0
                return ObjectiveOutput(zero, {"ce": zero.detach(), "tokens": zero.new_zeros(())},
                                       counts={"ce": zero.new_zeros(())})
            index = torch.tensor(keep, device=recon.device)
            clean, recon, lengths = clean[index], recon[index], lengths[index]
        width = int(lengths.max())
        clean, recon = clean[:, :width], recon[:, :width]
        if self.cfg.target == "text":
            labels = self.judge.text_labels([step.texts[i] for i in keep])
        else:
            clips = step.clips or [None] * len(lengths)
            labels = self.pseudo_labels(clean, lengths, clips)
        ce = self.judge.nll(recon, lengths, labels)
        tokens = recon.new_tensor(float(sum(len(y) for y in labels)))
        return ObjectiveOutput(self.cfg.weight * ce, {"ce": ce.detach(), "tokens": tokens},
                               counts={"ce": recon.new_tensor(float(len(labels)))})


def build_asr_loss(cfg: ASRLossConfig, s2t: WavS2T | None = None) -> ASRConsistencyLoss:
    """``s2t``: the trained WavS2T, needed when ``cfg.judge`` is s2t."""
    if cfg.target not in ("pseudo", "text"):
        raise ValueError(f"unknown asr target {cfg.target!r}; choose pseudo or text")
    if cfg.max_tokens < 1:
        raise ValueError(f"asr max_tokens must be at least 1, got {cfg.max_tokens}")
    if cfg.judge == "s2t":
        if s2t is None:
            raise ValueError(
                "the asr loss with judge: s2t needs the trained WavS2T of stage s2t; give its "
                "directory, or use judge: whisper"
            )
        return ASRConsistencyLoss(cfg, S2TJudge(s2t, cfg.max_tokens))
    if cfg.judge == "whisper":
        return ASRConsistencyLoss(cfg, WhisperJudge.from_config(cfg))
    raise ValueError(f"unknown asr judge {cfg.judge!r}; choose s2t or whisper")
