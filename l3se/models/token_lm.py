"""TokenLM: an unconditional language model over a codec's flattened tokens, the measure of how
predictable a codec's tokens are (seed 003's claim for codecs trained with LM objectives).

    sequence = bos, flattened codes (Q*T tokens, frame-major, as SpeechLM's)
    Qwen3 (random weights, the audio vocabulary) -> per-token cross-entropy [B, T, Q]

Each token is scored against the K entries of its own codebook only, SpeechLM's softmax
(``TokenLayout.codebook_rows``), so its perplexity is bounded by K and compares directly with
stage lm's loss.

Not ``SpeechLM`` with an empty prefix: SpeechLM's forward, rotary positions (``frame_positions``),
``frame_inputs`` and decoding all index a prefix of T12 frames aligned with the tokens, and an
enhancer without one would be accepted by stage lm and ignore its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from l3se.config import ConfigError
from l3se.models.llm import LLMConfig, build_qwen3
from l3se.models.tokens import BOS, TokenLayout


class TokenLM(nn.Module):
    """See the module docstring. ``llm`` must be built from ``arch`` (``pretrained: null``): a
    text LLM's vocabulary would have to be swapped for the audio one first, as SpeechLM does."""

    def __init__(self, llm: LLMConfig, tokens: TokenLayout):
        super().__init__()
        if llm.pretrained:
            raise ConfigError(f"the token LM trains from random weights; got pretrained "
                              f"{llm.pretrained!r} (set llm.pretrained: null and an arch)")
        self.tokens = tokens
        self.llm = build_qwen3(llm, vocab_size=tokens.vocab_size)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q, T] (entries in [0, K)) -> cross-entropy in nats [B, T, Q] of each token
        given bos and the tokens before it.

        No attention mask: attention is causal, so an item right-padded with any codes gets the
        same values at its real positions; the caller leaves the padded ones out.
        """
        b, q, t = codes.shape
        ids = self.tokens.flatten(codes)
        bos = torch.full((b, 1), BOS, dtype=ids.dtype, device=ids.device)
        # The last token predicts nothing.
        hidden = self.llm.model(input_ids=torch.cat([bos, ids[:, :-1]], 1)).last_hidden_state
        heads = self.tokens.codebook_rows(self.llm.lm_head.weight)  # [Q, K, H]
        logits = torch.einsum("btqh,qkh->btqk", hidden.reshape(b, t, q, -1), heads.to(hidden.dtype))
        targets = codes.transpose(1, 2)  # [B, T, Q]
        return F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(),
                               reduction="none").view(b, t, q)
