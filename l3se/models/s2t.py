"""WavS2T: the semantic teacher of L3-SE (paper section 3.2, Appendix A.2).

    wav [B, S] 16 kHz -> WavLM (frozen, shared with WavCodec) -> L hidden states [B, T50, H]
      -> LayerMixture -> Transformer x6                      -> semantic [B, T50, D]  (50 Hz)
      ntp: -> Linear D -> H_llm -> prefix of a frozen Qwen3 that predicts the transcript tokens
      ctc: -> Linear D -> vocab + blank, CTC over the frames (the Table 3 (e) ablation)

S is padded to a multiple of 1280 samples (one codec frame), so T50 = 4 * ceil(S / 1280) and the
semantic target lines up with WavCodec's [B, T12, D] latent. The encoder output is the target
the NI-Encoder's semantic head is distilled towards.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from l3se.config import load_config, save_config
from l3se.models.heads import SemanticEncoder, SemanticHeadConfig, frame_padding_mask
from l3se.models.llm import PAPER_QWEN3, LLMConfig, build_qwen3, cache_kwargs, qwen3_arch
from l3se.models.ssl import LayerMixture, SSLConfig, WavLMBackbone
from l3se.models.tokenizer import load_tokenizer
from l3se.models.weights import CONFIG_FILE, WEIGHTS_FILE, load_weights, save_weights

TOKENIZER_DIR = "tokenizer"
# WavCodec's token frame is 4 WavLM hops: padding to it keeps T50 == 4 * T12.
FRAMES_PER_TOKEN = 4


@dataclass
class WavS2TConfig:
    ssl: SSLConfig = field(default_factory=SSLConfig)
    mixture_layer_norm: bool = True
    encoder: SemanticHeadConfig = field(default_factory=SemanticHeadConfig)
    objective: Literal["ntp", "ctc"] = "ntp"
    # The frozen text LLM (ntp only).
    llm: LLMConfig = field(default_factory=LLMConfig)
    # Hub name or saved folder, loaded with transformers.AutoTokenizer.
    tokenizer: str = PAPER_QWEN3
    # Output rows of a randomly built LLM or of the CTC head (blank excluded); null: the
    # tokenizer's length. A pretrained LLM keeps its own vocabulary.
    vocab_size: int | None = None
    # Transcript tokens per utterance; longer ones are cut (and get no eos target).
    max_text_tokens: int = 256
    # LibriSpeech transcripts are upper case; a text LLM's prior is for ordinary casing.
    lowercase_text: bool = True


class WavS2T(nn.Module):
    """See the module docstring. ``tokenizer`` (optional) is used instead of loading
    ``cfg.tokenizer``; it is otherwise loaded when first needed, so a model whose
    ``vocab_size`` is known builds without it (e.g. on the meta device)."""

    def __init__(self, cfg: WavS2TConfig, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        self._tokenizer = tokenizer
        self.ssl = WavLMBackbone(cfg.ssl)
        self.mixture = LayerMixture(self.ssl.num_hidden_states, cfg.mixture_layer_norm)
        self.encoder = SemanticEncoder(self.ssl.hidden_size, cfg.encoder)
        self.frame_length = self.ssl.hop * FRAMES_PER_TOKEN
        if cfg.objective == "ntp":
            vocab = {} if cfg.llm.pretrained else {"vocab_size": self._vocab_size()}
            self.llm = build_qwen3(cfg.llm, **vocab)
            self.llm.requires_grad_(False)
            self.proj = nn.Linear(cfg.encoder.dim, self.llm.config.hidden_size)
        elif cfg.objective == "ctc":
            # The blank is the last class, so token ids need no shift.
            self.ctc_head = nn.Linear(cfg.encoder.dim, self._vocab_size() + 1)
        else:
            raise ValueError(f"unknown objective {cfg.objective!r}; choose ntp or ctc")
        self.train(False)

    # ---- text ------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.tokenizer)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Token classes the model predicts (blank excluded)."""
        if self.cfg.objective == "ntp":
            return self.llm.config.vocab_size
        return self.ctc_head.out_features - 1

    def _vocab_size(self) -> int:
        return self.cfg.vocab_size if self.cfg.vocab_size is not None else len(self.tokenizer)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Transcripts -> token ids (no specials), at most ``max_text_tokens`` each."""
        if self.cfg.lowercase_text:
            texts = [t.lower() for t in texts]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        if max((max(i, default=-1) for i in ids), default=-1) >= self.vocab_size:
            raise ValueError(
                f"tokenizer {self.cfg.tokenizer} has ids beyond the model's {self.vocab_size} "
                "classes: it is not the tokenizer this model was built for"
            )
        return ids

    def normalize(self, text: str) -> str:
        """A transcript as ``transcribe`` can return it (case and tokenizer normalisation)."""
        return self.tokenizer.decode(self.tokenize([text])[0], skip_special_tokens=True).strip()

    # ---- speech ----------------------------------------------------------------------------

    def train(self, mode: bool = True) -> WavS2T:
        super().train(mode)
        # Like the frozen WavLM: dropout in the frozen LLM would only add noise to the targets.
        if self.cfg.objective == "ntp":
            self.llm.train(False)
        return self

    def num_frames(self, num_samples: int) -> int:
        """50 Hz frames for ``num_samples``: 4 per started 1280-sample codec frame."""
        return FRAMES_PER_TOKEN * math.ceil(num_samples / self.frame_length)

    def encode(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """wav [B, S], lengths [B] (default: all S) -> (semantic [B, T50, D], padding mask
        [B, T50] True = pad, or None when nothing is padded)."""
        n = self.num_frames(wav.shape[-1])
        if lengths is None:
            # The padding to whole codec frames is not signal either.
            lengths = torch.full((wav.shape[0],), wav.shape[-1], device=wav.device)
        padded = F.pad(wav, (0, n * self.ssl.hop - wav.shape[-1]))
        mask = frame_padding_mask(lengths, n, self.ssl.hop)
        return self.encoder(self.mixture(self.ssl(padded, lengths)), mask), mask

    def _frame_lengths(self, mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """[B] valid frames of ``x`` [B, T, ...]."""
        if mask is None:
            return torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        return (~mask).sum(-1)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None, texts: list[str]
    ) -> torch.Tensor:
        """wav [B, S], lengths [B], B transcripts -> scalar loss (mean over transcript tokens
        and eos for ntp; CTC loss per target token for ctc)."""
        if len(texts) != wav.shape[0]:
            raise ValueError(f"{wav.shape[0]} waveforms but {len(texts)} transcripts")
        return self.target_loss(wav, lengths, self.targets(self.tokenize(texts)))

    def targets(self, ids: list[list[int]], limit: int | None = None) -> list[list[int]]:
        """Token ids -> the sequences the loss scores: each cut to ``limit`` tokens (default
        ``max_text_tokens``); for ntp, eos follows every one that was not cut."""
        limit = self.cfg.max_text_tokens if limit is None else limit
        eos = [self.tokenizer.eos_token_id] if self.cfg.objective == "ntp" else []
        return [t[:limit] + (eos if len(t) <= limit else []) for t in ids]

    def target_loss(
        self, wav: torch.Tensor, lengths: torch.Tensor | None, targets: list[list[int]]
    ) -> torch.Tensor:
        """wav [B, S], lengths [B], B ``targets`` sequences -> scalar loss (mean over target
        tokens for ntp; CTC loss per target token for ctc)."""
        semantic, mask = self.encode(wav, lengths)
        frames = self._frame_lengths(mask, semantic)
        if self.cfg.objective == "ctc":
            return self._ctc_loss(semantic, frames, targets)
        return self._ntp_loss(self.proj(semantic), frames, targets)

    def _ntp_loss(self, prefix: torch.Tensor, frames: torch.Tensor, targets: list[list[int]]):
        """prefix [B, T50, H] -> next-token loss on each item's target sequence. Item i is laid
        out as [its n_i valid frames, its targets but the last], right-padded: padded frames
        never enter the sequence, and every item's text starts at position n_i."""
        dev = prefix.device
        embed = self.llm.get_input_embeddings()
        rows, label_rows = [], []
        for i, follow in enumerate(targets):
            # The last prefix frame predicts the first target, each target the next; nothing
            # is scored after the last, so it needs no input position.
            tokens_t = torch.tensor(follow[:-1], dtype=torch.long, device=dev)
            rows.append(torch.cat([prefix[i, : frames[i]], embed(tokens_t).to(prefix.dtype)]))
            target = torch.full((len(rows[-1]),), -100, dtype=torch.long, device=dev)
            start = int(frames[i]) - 1
            target[start : start + len(follow)] = torch.tensor(follow, dtype=torch.long)
            label_rows.append(target)
        inputs = pad_sequence(rows, batch_first=True)
        labels = pad_sequence(label_rows, batch_first=True, padding_value=-100)
        sizes = torch.tensor([len(r) for r in rows], device=dev)
        positions = torch.arange(inputs.shape[1], device=dev)[None].expand(len(rows), -1)
        attention = (positions < sizes[:, None]).long()
        hidden = self.llm.model(
            inputs_embeds=inputs, attention_mask=attention, position_ids=positions
        ).last_hidden_state
        # The LM head only where there is a target: [B, L, vocab] logits would dwarf the rest
        # of the step's memory at Qwen3's 152k vocabulary.
        keep = labels >= 0
        logits = self.llm.lm_head(hidden[keep])
        return F.cross_entropy(logits.float(), labels[keep])

    def _ctc_loss(self, semantic: torch.Tensor, frames: torch.Tensor, targets: list[list[int]]):
        log_probs = self.ctc_head(semantic).float().log_softmax(-1)
        flat = torch.tensor([i for t in targets for i in t], dtype=torch.long)
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            flat.to(semantic.device),
            frames,
            target_lengths.to(semantic.device),
            blank=self.vocab_size,
            reduction="mean",
            # A transcript longer than its frames has no alignment: no gradient, not inf.
            zero_infinity=True,
        )

    # ---- decoding --------------------------------------------------------------------------

    @torch.no_grad()
    def transcribe(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, max_tokens: int | None = None
    ) -> list[str]:
        """wav [B, S], lengths [B] -> B greedy transcripts (at most ``max_tokens`` tokens,
        default ``max_text_tokens``)."""
        limit = max_tokens if max_tokens is not None else self.cfg.max_text_tokens
        ids = self.greedy_ids(wav, lengths, limit)
        return [self.tokenizer.decode(t[:limit], skip_special_tokens=True).strip() for t in ids]

    @torch.no_grad()
    def greedy_ids(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, max_tokens: int | None = None
    ) -> list[list[int]]:
        """wav [B, S], lengths [B] -> B greedy token id lists, eos excluded: ntp stops at
        ``max_tokens`` (default ``max_text_tokens``), ctc's best path has no limit."""
        semantic, mask = self.encode(wav, lengths)
        frames = self._frame_lengths(mask, semantic)
        if self.cfg.objective == "ctc":
            return self._ctc_decode(semantic, frames)
        limit = max_tokens if max_tokens is not None else self.cfg.max_text_tokens
        return self._greedy(self.proj(semantic), frames, limit)

    def _greedy(self, prefix: torch.Tensor, frames: torch.Tensor, limit: int) -> list[list[int]]:
        """Greedy decoding with the KV cache. Prefixes are left-padded so every item's next
        token is read at the same (last) position."""
        from transformers import DynamicCache

        dev, n = prefix.device, prefix.shape[0]
        width = int(frames.max())
        inputs = prefix.new_zeros(n, width, prefix.shape[-1])
        attention = torch.zeros(n, width, dtype=torch.long, device=dev)
        for i in range(n):
            inputs[i, width - frames[i] :] = prefix[i, : frames[i]]
            attention[i, width - frames[i] :] = 1
        positions = (attention.cumsum(-1) - 1).clamp_min(0)
        eos = self.tokenizer.eos_token_id
        cache = DynamicCache()
        out = self.llm(
            inputs_embeds=inputs,
            attention_mask=attention,
            position_ids=positions,
            logits_to_keep=1,
            **cache_kwargs(cache),
        )
        tokens: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        for _ in range(limit):
            nxt = out.logits[:, -1].argmax(-1)
            done = done | (nxt == eos)
            if bool(done.all()):
                break
            for i in torch.nonzero(~done).flatten().tolist():
                tokens[i].append(int(nxt[i]))
            attention = torch.cat([attention, attention.new_ones(n, 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.llm(
                input_ids=nxt[:, None],
                attention_mask=attention,
                position_ids=positions,
                **cache_kwargs(cache),
            )
        return tokens

    def _ctc_decode(self, semantic: torch.Tensor, frames: torch.Tensor) -> list[list[int]]:
        """Best path: argmax per frame, merge repeats, drop blanks."""
        best = self.ctc_head(semantic).argmax(-1)
        out = []
        for i in range(best.shape[0]):
            path = torch.unique_consecutive(best[i, : frames[i]])
            out.append([int(t) for t in path if int(t) != self.vocab_size])
        return out

    # ---- sharing and saving ----------------------------------------------------------------

    def load_backbone_from(self, codec) -> None:
        """Copy a WavCodec's WavLM (a module or a saved ``from_pretrained`` folder) into
        ``self.ssl``: the two teachers share one backbone."""
        from l3se.models.codec import copy_wavlm

        copy_wavlm(codec, self.ssl)

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.yaml`` + ``model.safetensors`` + ``tokenizer/``; WavLM and the LLM
        are stored with their architectures, so loading needs no hub."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path / TOKENIZER_DIR))
        ssl = dataclasses.replace(self.cfg.ssl, pretrained=None, arch=self.ssl.arch())
        llm = self.cfg.llm
        if self.cfg.objective == "ntp":
            llm = dataclasses.replace(llm, pretrained=None, arch=qwen3_arch(self.llm))
        cfg = dataclasses.replace(
            self.cfg,
            ssl=ssl,
            llm=llm,
            tokenizer=str((path / TOKENIZER_DIR).resolve()),
            vocab_size=self.vocab_size,
        )
        save_config(cfg, path / CONFIG_FILE)
        save_weights(self, path / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> WavS2T:
        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR):
            if not (path / name).exists():
                raise FileNotFoundError(f"{path} is not a saved WavS2T: {name} is missing")
        cfg = load_config(WavS2TConfig, path / CONFIG_FILE)
        # The folder may have moved since it was saved: its own tokenizer wins.
        cfg.tokenizer = str(path / TOKENIZER_DIR)
        model = cls(cfg)
        load_weights(model, path / WEIGHTS_FILE)
        return model.to(device)
