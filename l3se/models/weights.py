"""Module weights <-> safetensors files (never pickles)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from l3se.config import load_config, save_config


def storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` as safetensors stores them: it refuses views into larger storages (e.g.
    ``torch.hann_window`` buffers) and tensors that share memory."""
    out = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        t = t.detach()
        ptr = t.untyped_storage().data_ptr()
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if not whole or ptr in seen:
            t = t.contiguous().clone()
        seen.add(ptr)
        out[name] = t
    return out


def state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()``, storable."""
    return storable(module.state_dict())


def save_weights(module: nn.Module, path: str | Path) -> None:
    from safetensors.torch import save_file

    save_file(state_tensors(module), str(path))


def load_weights(module: nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    """Load every tensor of ``module`` from ``path``; missing or unexpected names are an error."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path), device=str(device)), strict=True)


CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"


class Pretrained:
    """Mixin for a module saved as a directory: ``config.yaml`` + ``model.safetensors``.

    Subclasses set ``config_class`` and implement ``portable_config()``: their config with every
    hub name replaced by the full architecture, so that loading never needs the hub."""

    config_class: type

    def portable_config(self):
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_config(self.portable_config(), path / CONFIG_FILE)
        save_weights(self, path / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu"):
        path = Path(path)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path} is not a saved {cls.__name__}: {name} is missing")
        model = cls(load_config(cls.config_class, path / CONFIG_FILE))
        load_weights(model, path / WEIGHTS_FILE)
        return model.to(device)
