"""What every metric shares: the signal pair it scores, its interface, and model loading.

A metric is built once per worker process (models load once) and then called per file with a
``Pair``. Model-based metrics load by hub name or local path; when the model is missing they
raise ``ModelUnavailable`` so the run logs one ``skipped:`` line instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The rate every metric scores at (files are resampled to it on load): wide-band PESQ is defined
# at 16 kHz, and DNSMOS, pocketsphinx's acoustic model and the SSL and Whisper models take 16 kHz.
SAMPLE_RATE = 16000


class ModelUnavailable(Exception):
    """A metric's model is neither a local path nor in the local cache (or could not load)."""

    def __init__(self, model: str, reason: str = ""):
        super().__init__(f"{model} not available" + (f": {reason}" if reason else ""))
        self.model = model


@dataclass
class Pair:
    """One output to score against its reference, all float32 mono 16 kHz.

    ``est`` is the whole output [S_est] (non-intrusive metrics, ASR); ``est_aligned`` is the output
    cut or zero-padded to the reference length [S_ref]; ``ref`` [S_ref] and ``text`` are None when
    the evaluation has no reference audio or transcript for this file. ``ref_memo`` is shared by
    all systems scored against the same reference, so reference-side work (its transcript,
    speaker embedding, SSL features) is done once per file; ``est_memo`` lets two metrics share
    work on this output (WER and dWER share one transcript).
    """

    est: np.ndarray
    est_aligned: np.ndarray | None = None
    ref: np.ndarray | None = None
    text: str | None = None
    ref_memo: dict[Any, Any] = field(default_factory=dict)
    est_memo: dict[Any, Any] = field(default_factory=dict)

    def reference_side(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per reference file for ``key``."""
        if key not in self.ref_memo:
            self.ref_memo[key] = compute()
        return self.ref_memo[key]

    def output_side(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per output file for ``key``."""
        if key not in self.est_memo:
            self.est_memo[key] = compute()
        return self.est_memo[key]


class Metric:
    """A per-file scorer. ``columns`` are the result fields ``score`` returns; what data it needs
    besides the output is its ``registry.MetricSpec``'s."""

    name: str = ""
    columns: tuple[str, ...] = ()

    def score(self, pair: Pair) -> dict[str, Any]:
        raise NotImplementedError


def from_pretrained(cls, name: str, local_only: bool, **kwargs):
    """``cls.from_pretrained`` that turns 'not found / not cached' into ``ModelUnavailable``."""
    try:
        return cls.from_pretrained(name, local_files_only=local_only, **kwargs)
    except (OSError, ValueError) as e:  # transformers: OSError (missing), ValueError (bad config)
        raise ModelUnavailable(name, str(e).splitlines()[0] if str(e) else "") from None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings [D]."""
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else float("nan")
