"""The SpeechLM's audio vocabulary and the frame-major flattening of RVQ codes.

    ids:  [pad, bos, codebook 0 (K entries), codebook 1 (K), ..., codebook Q-1 (K)]
    token of codebook q, entry k = n_specials + q * K + k
    codes [B, Q, T] -> ids [B, Q*T] ordered f0c0, f0c1, ..., f0c(Q-1), f1c0, ...

Frame-major order puts a frame's coarse-to-fine residuals next to each other, so each token is
predicted with the coarser residuals of its own frame already known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PAD = 0
# Start of audio: follows the prefix, so the first audio token is predicted from it.
BOS = 1
SPECIALS = ("pad", "bos")


@dataclass(frozen=True)
class TokenLayout:
    n_codebooks: int = 8
    codebook_size: int = 1024

    @property
    def n_specials(self) -> int:
        return len(SPECIALS)

    @property
    def vocab_size(self) -> int:
        return self.n_specials + self.n_codebooks * self.codebook_size

    def codebook_of(self, position: int | torch.Tensor) -> int | torch.Tensor:
        """Codebook predicted at ``position`` of the flattened audio (0 = first audio token)."""
        return position % self.n_codebooks

    def legal_range(self, position: int) -> tuple[int, int]:
        """[start, stop) of the ids legal at flattened audio ``position``."""
        start = self.n_specials + self.codebook_of(position) * self.codebook_size
        return start, start + self.codebook_size

    def codebook_rows(self, head: torch.Tensor) -> torch.Tensor:
        """Output head [vocab_size, H] -> its audio rows as a [Q, K, H] view: row (q, k) scores
        entry k of codebook q, so a position's logits come from its own codebook's K rows."""
        return head[self.n_specials :].view(self.n_codebooks, self.codebook_size, -1)

    def flatten(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q, T] (entries in [0, K)) -> ids [B, Q*T], frame-major."""
        if codes.shape[1] != self.n_codebooks:
            raise ValueError(f"expected {self.n_codebooks} codebooks, got {codes.shape[1]}")
        offsets = self.n_specials + self.codebook_size * torch.arange(
            self.n_codebooks, device=codes.device
        )
        return (codes + offsets[:, None]).transpose(1, 2).reshape(codes.shape[0], -1)

    def unflatten(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, Q*T] -> codes [B, Q, T]; the inverse of ``flatten``."""
        b, n = ids.shape
        if n % self.n_codebooks:
            raise ValueError(f"{n} tokens is not a whole number of {self.n_codebooks}-token frames")
        frames = ids.reshape(b, n // self.n_codebooks, self.n_codebooks).transpose(1, 2)
        offsets = self.n_specials + self.codebook_size * torch.arange(
            self.n_codebooks, device=ids.device
        )
        return frames - offsets[:, None]
