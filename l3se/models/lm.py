"""SpeechLM: a Qwen3 decoder over flattened codec tokens, prompted by the NI-Encoder's features.

    acoustic a [B, T12, Da]           -> adapter -> [B, T12, H/2] --+
    semantic s [B, T50, Ds] -> stack 4 -> [B, T12, 4*Ds] -> adapter -> [B, T12, H/2] --+-> prefix
    sequence = prefix [B, T12, H], bos, flattened clean codes (Q*T12 tokens, frame-major)
    Qwen3 (text vocabulary replaced by the audio one) -> next-token logits

With ``prefix: acoustic`` the acoustic adapter alone outputs H. Each audio position is scored
only against the K entries of its own codebook (see ``SpeechLM.forward``).

Rotary positions (``SpeechLM.position_ids``): by default the sequence counts 0, 1, 2, ... With
``frame_positions`` every token of frame t shares position t with prefix frame t, so the prefix
frame a token needs is always at rotary offset 0 instead of T12 + 1 + 7t + q positions back.
With ``frame_inputs`` the input that predicts a token of frame t also carries prefix frame t
(``SpeechLM.frame_inputs``), so the frame reaches the token without any attention at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from l3se.models.llm import LLMConfig, build_qwen3, qwen3_arch
from l3se.models.s2t import FRAMES_PER_TOKEN
from l3se.models.tokens import BOS, PAD, TokenLayout
from l3se.models.weights import Pretrained


@dataclass
class SpeechLMConfig:
    llm: LLMConfig = field(default_factory=LLMConfig)
    prefix: Literal["acoustic", "acoustic+semantic"] = "acoustic+semantic"
    # Feature sizes of the NI-Encoder's heads; the lm recipe fills nulls from the loaded encoder.
    acoustic_dim: int | None = 1024
    semantic_dim: int | None = 1024
    # NI-Encoder semantic frames (50 Hz, one per WavLM hop) stacked per codec frame (12.5 Hz).
    semantic_stack: int = FRAMES_PER_TOKEN
    adapter_hidden: int = 1024
    n_codebooks: int = 8
    codebook_size: int = 1024
    # The paper counts positions along the sequence. A small LM trained from scratch never
    # learns to find its prefix frame that way (its codes were 99.3% identical with an all-zero
    # prefix); sharing the frame's position with its prefix frame makes the lookup a fixed offset.
    frame_positions: bool = False
    # Not in the paper either. Even with frame_positions a 2-layer LM trained for minutes must
    # learn to attend to its prefix frame (teacher-forced accuracy 15% after 5000 steps on the
    # starter corpus); adding a projection of prefix frame t to the input of every position that
    # predicts a token of frame t hands it over directly (the projection starts at zero, a
    # no-op). On true histories alone it slowed learning (teacher-forced validation loss 4.17
    # against 3.84 at step 1500); with history_noise it let greedy decoding reach the LM's
    # teacher-forced quality (docs/diagnosis.md). The prefix stays in the sequence as well.
    frame_inputs: bool = False
    # Share of the input tokens replaced by a random entry of their codebook during training
    # (the targets stay clean). Not in the paper: teacher forcing never shows the LM its own
    # mistakes, and on the starter eval set the tiny LM's codes decoded to STOI 0.676 with the true
    # history (teacher-forced argmax) but 0.601 when generating (greedy), below the codec's own
    # quantization of the NI-Encoder output (0.662).
    history_noise: float = 0.0

    @property
    def tokens(self) -> TokenLayout:
        return TokenLayout(self.n_codebooks, self.codebook_size)


class Adapter(nn.Module):
    """Lightweight projection [B, T, D_in] -> [B, T, D_out]: Linear-GELU-Linear."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, output_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class LMOutput:
    loss: torch.Tensor  # scalar: mean cross-entropy over valid audio tokens
    logits: torch.Tensor  # [B, T12, Q, K] per-codebook logits of each target token
    accuracy: torch.Tensor  # scalar: share of valid audio tokens predicted exactly (argmax)


class SpeechLM(Pretrained, nn.Module):
    """See the module docstring."""

    config_class = SpeechLMConfig

    def __init__(self, cfg: SpeechLMConfig):
        super().__init__()
        if cfg.acoustic_dim is None:
            raise ValueError("SpeechLMConfig.acoustic_dim is not set")
        semantic = cfg.prefix == "acoustic+semantic"
        if semantic and cfg.semantic_dim is None:
            raise ValueError("prefix 'acoustic+semantic' needs SpeechLMConfig.semantic_dim")
        self.cfg = cfg
        self.tokens = cfg.tokens
        self.llm = build_qwen3(cfg.llm, vocab_size=self.tokens.vocab_size)
        if self.llm.config.vocab_size != self.tokens.vocab_size:
            self._replace_vocabulary()
        h = self.hidden_size
        if semantic and h % 2:
            raise ValueError(f"LLM hidden size {h} is odd: it cannot hold two equal halves")
        self.acoustic_adapter = Adapter(
            cfg.acoustic_dim, cfg.adapter_hidden, h // 2 if semantic else h
        )
        self.semantic_adapter = (
            Adapter(cfg.semantic_dim * cfg.semantic_stack, cfg.adapter_hidden, h // 2)
            if semantic
            else None
        )
        self.frame_projection = nn.Linear(h, h, bias=False) if cfg.frame_inputs else None
        if self.frame_projection is not None:
            nn.init.zeros_(self.frame_projection.weight)

    def _replace_vocabulary(self) -> None:
        """Swap a pretrained text vocabulary for freshly initialised audio embeddings and head;
        the transformer body keeps its pretrained weights."""
        conf = self.llm.config
        embed = nn.Embedding(self.tokens.vocab_size, conf.hidden_size)
        nn.init.normal_(embed.weight, std=conf.initializer_range)
        head = nn.Linear(conf.hidden_size, self.tokens.vocab_size, bias=False)
        if conf.tie_word_embeddings:
            head.weight = embed.weight
        else:
            nn.init.normal_(head.weight, std=conf.initializer_range)
        self.llm.model.embed_tokens = embed
        self.llm.lm_head = head
        conf.vocab_size = self.tokens.vocab_size
        self.llm.vocab_size = self.tokens.vocab_size

    @torch.no_grad()
    def load_audio_vocabulary(self, embed: torch.Tensor, head: torch.Tensor) -> None:
        """Start the audio tokens' input embeddings and, when untied, output-head rows from
        [Q, K, H] tensors: those LLM-Codec trained for this codec with the same LLM."""
        t = self.tokens
        shape = (t.n_codebooks, t.codebook_size, self.hidden_size)
        for name, rows in (("embeddings", embed), ("head", head)):
            if tuple(rows.shape) != shape:
                raise ValueError(f"audio {name} of shape {tuple(rows.shape)}; this LM needs "
                                 f"{shape} (codebooks, entries, hidden size)")
        weight = self.llm.model.embed_tokens.weight
        weight[t.n_specials :] = embed.reshape(-1, shape[2]).to(weight)
        if self.llm.lm_head.weight is not weight:
            self.llm.lm_head.weight[t.n_specials :] = head.reshape(-1, shape[2]).to(weight)

    @property
    def hidden_size(self) -> int:
        return self.llm.config.hidden_size

    @property
    def body(self) -> nn.Module:
        """The Qwen3 transformer without its output head: inputs_embeds -> hidden states."""
        return self.llm.model

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, N] -> [B, N, H]."""
        return self.llm.model.embed_tokens(ids)

    def codebook_head(self) -> torch.Tensor:
        """Output-head rows of the audio tokens as [Q, K, H]: row (q, k) scores entry k of
        codebook q. A view, so it follows training and tying."""
        return self.tokens.codebook_rows(self.llm.lm_head.weight)

    def prefix(self, acoustic: torch.Tensor, semantic: torch.Tensor | None = None) -> torch.Tensor:
        """acoustic [B, T12, Da], semantic [B, 4*T12, Ds] (prefix 'acoustic+semantic') ->
        prefix [B, T12, H]."""
        a = self.acoustic_adapter(acoustic)
        if self.semantic_adapter is None:
            return a
        if semantic is None:
            raise ValueError("this SpeechLM's prefix needs the semantic features")
        b, t50, d = semantic.shape
        k = self.cfg.semantic_stack
        if t50 != k * a.shape[1]:
            raise ValueError(f"{t50} semantic frames for {a.shape[1]} acoustic frames, need {k}x")
        s = self.semantic_adapter(semantic.reshape(b, t50 // k, k * d))
        return torch.cat([a, s], dim=-1)

    def frame_inputs(self, x: torch.Tensor, prefix: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token inputs x [B, N, H], input ``start`` onwards (input 0 is bos, input j the j-th
        token, so input j predicts token j of frame j // Q), prefix [B, T12, H] (right-padded)
        -> x plus the projected prefix frame (start + n) // Q on input n when ``frame_inputs`` is
        on. Inputs past the last frame get nothing: only the last token is, and it predicts
        nothing."""
        if self.frame_projection is None:
            return x
        frames = (start + torch.arange(x.shape[1], device=x.device)) // self.tokens.n_codebooks
        inside = frames < prefix.shape[1]
        add = self.frame_projection(prefix[:, frames.clamp_max(prefix.shape[1] - 1)])
        return x + (add * inside[None, :, None]).to(x.dtype)

    def noisy_history(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q, T12] -> the same with a ``history_noise`` share of the entries replaced by
        random ones (torch's global generator): what the LM reads, not what it predicts."""
        p = self.cfg.history_noise
        if p <= 0:
            return codes
        swap = torch.rand(codes.shape, device=codes.device) < p
        return torch.where(swap, torch.randint_like(codes, self.tokens.codebook_size), codes)

    def position_ids(self, mask: torch.Tensor) -> torch.Tensor:
        """Attention mask [B, T12 + 1 + Q*T12] of [prefix, bos, tokens] -> rotary position ids.

        Prefix padding (left or right) is skipped, so positions count from an item's first real
        frame. With ``frame_positions`` prefix frame t and the Q tokens of frame t all get t (bos
        gets 0): the ids follow from the layout alone, so a decoding step can compute its own.
        """
        mask = mask.long()
        if not self.cfg.frame_positions:
            return (mask.cumsum(1) - 1).clamp_min(0)
        n = mask.shape[1] - 1 - (mask.shape[1] - 1) // (1 + self.tokens.n_codebooks)
        t = mask.shape[1] - 1 - n
        prefix = (mask[:, :t].cumsum(1) - 1).clamp_min(0)
        frames = torch.arange(n, device=mask.device) // self.tokens.n_codebooks
        tokens = torch.cat([frames.new_zeros(1), frames])[None].expand(mask.shape[0], -1)
        return torch.cat([prefix, tokens], 1)

    def forward(
        self, prefix: torch.Tensor, frame_lengths: torch.Tensor, codes: torch.Tensor
    ) -> LMOutput:
        """prefix [B, T12, H], frame_lengths [B], clean codes [B, Q, T12] -> teacher-forced loss.

        Sequence: [prefix (T12), bos, ids (Q*T12)]. Frames past an item's length (prefix and
        tokens alike) are masked out of attention, and position ids skip them, so every item
        sees exactly what ``l3se.decoding.generate`` gives it.

        The loss is a softmax over each position's own codebook (K entries), not the whole
        vocabulary: decoding can only ever pick from that slice, so this is the distribution it
        samples, the other Q*K - K + n_specials logits would only learn to be small, and the head
        costs Q x less.
        """
        b, q, t = codes.shape
        valid = torch.arange(t, device=codes.device)[None] < frame_lengths[:, None]  # [B, T12]
        history = self.noisy_history(codes) if self.training else codes
        logits = self.logits(prefix, frame_lengths, history)
        targets = codes.transpose(1, 2)  # [B, T12, Q]
        flat_valid = valid[..., None].expand(b, t, q)
        loss = F.cross_entropy(logits.float()[flat_valid], targets[flat_valid])
        correct = (logits.argmax(-1) == targets)[flat_valid].float().mean()
        return LMOutput(loss=loss, logits=logits, accuracy=correct)

    def logits(
        self, prefix: torch.Tensor, frame_lengths: torch.Tensor, history: torch.Tensor
    ) -> torch.Tensor:
        """prefix [B, T12, H], frame_lengths [B], codes read as the history [B, Q, T12] ->
        per-codebook logits [B, T12, Q, K] of each next token (see ``forward``)."""
        b, q, t = history.shape
        valid = torch.arange(t, device=history.device)[None] < frame_lengths[:, None]
        ids = self.tokens.flatten(history.masked_fill(~valid[:, None], 0))
        bos = torch.full((b, 1), BOS, dtype=ids.dtype, device=ids.device)
        token_mask = valid.repeat_interleave(q, dim=1)  # [B, Q*T12]
        ids = ids.masked_fill(~token_mask, PAD)
        inputs = self.frame_inputs(self.embed(torch.cat([bos, ids], 1)).to(prefix.dtype), prefix)
        x = torch.cat([prefix, inputs], 1)
        mask = torch.cat([valid, torch.ones_like(bos, dtype=torch.bool), token_mask], 1)
        positions = self.position_ids(mask)
        # The last token predicts nothing; dropping it keeps the sequence at T12 + Q*T12.
        hidden = self.body(
            inputs_embeds=x[:, :-1], attention_mask=mask[:, :-1].long(),
            position_ids=positions[:, :-1],
        ).last_hidden_state
        # Hidden state at bos and at each token but the last predicts the next token.
        hidden = hidden[:, t:].reshape(b, t, q, -1)  # [B, T12, Q, H]
        return torch.einsum("btqh,qkh->btqk", hidden, self.codebook_head().to(hidden.dtype))

    def portable_config(self) -> SpeechLMConfig:
        # The full architecture, audio vocabulary included.
        return dataclasses.replace(self.cfg, llm=LLMConfig(pretrained=None, arch=qwen3_arch(self.llm)))
