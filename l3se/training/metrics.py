"""Diagnostics logged during training."""

from __future__ import annotations

import torch


class CodebookUsage:
    """Running code histogram per codebook -> perplexity (exp of the code entropy; K when every
    entry is equally used) and the share of entries used at least once."""

    def __init__(self, n_codebooks: int, codebook_size: int):
        self.counts = torch.zeros(n_codebooks, codebook_size, dtype=torch.long)

    def update(self, codes: torch.Tensor) -> None:
        """codes [B, Q, T]."""
        flat = codes.detach().transpose(0, 1).reshape(codes.shape[1], -1).cpu()
        self.counts.scatter_add_(1, flat, torch.ones_like(flat))

    def compute(self, reset: bool = True) -> dict[str, float]:
        out: dict[str, float] = {}
        if int(self.counts.sum()) == 0:
            return out
        p = self.counts.double() / self.counts.sum(1, keepdim=True).clamp_min(1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
        used = (self.counts > 0).double().mean(1)
        for q in range(self.counts.shape[0]):
            out[f"codebook/{q}/perplexity"] = float(entropy[q].exp())
            out[f"codebook/{q}/used"] = float(used[q])
        if reset:
            self.counts.zero_()
        return out


def length_mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero every sample of x [B, S] past its item's length."""
    positions = torch.arange(x.shape[-1], device=x.device)[None]
    return x * (positions < lengths[:, None].to(x.device))


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per item: [B, S] x [B, S] -> [B]."""
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.square().sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.square().sum(-1) + eps) / (noise.square().sum(-1) + eps))


def log_spectral_distance(
    estimate: torch.Tensor, reference: torch.Tensor, n_fft: int = 512
) -> torch.Tensor:
    """RMS difference of log power spectra in dB, averaged over frames: [B, S] x [B, S] -> [B]."""
    window = torch.hann_window(n_fft, device=estimate.device)

    def log_power(x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.float(), n_fft, n_fft // 4, window=window, return_complex=True)
        return 10 * torch.log10(spec.abs().square() + 1e-8)

    diff = log_power(estimate) - log_power(reference)
    return diff.square().mean(1).sqrt().mean(-1)
