"""Module weights <-> safetensors files (never pickles)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` made storable: safetensors refuses views into larger storages
    (e.g. ``torch.hann_window`` buffers) and tensors that share memory."""
    out = {}
    seen: set[int] = set()
    for name, t in module.state_dict().items():
        t = t.detach()
        ptr = t.untyped_storage().data_ptr()
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if not whole or ptr in seen:
            t = t.contiguous().clone()
        seen.add(ptr)
        out[name] = t
    return out


def save_weights(module: nn.Module, path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file(state_tensors(module), str(path))


def load_weights(module: nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    """Load every tensor of ``module`` from ``path``; missing or unexpected names are an error."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path), device=str(device)), strict=True)
