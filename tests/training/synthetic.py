"""A stand-in for ``data_sim.dataset.MixtureDataset``: same item format, no files."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from tests.conftest import speech_like


class SyntheticSpeech(Dataset):
    """``n`` clean items of ``seconds`` each (noisy == clean), a function of (seed, index)."""

    def __init__(self, n: int = 8, seconds: float = 0.5, seed: int = 0):
        self.n, self.seconds, self.seed = n, seconds, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        wav = torch.from_numpy(speech_like(rng, self.seconds))
        return {"noisy": wav, "clean": wav.clone(), "meta": {"id": str(index)}}
