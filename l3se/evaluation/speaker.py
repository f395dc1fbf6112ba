"""Speaker similarity (SIM): cosine similarity of speaker embeddings of output and reference.

``sim`` uses Resemblyzer's GE2E d-vector (an LSTM speaker encoder trained with the generalised
end-to-end loss; its weights ship in the wheel, so it runs offline). It is NOT the paper's
WavLM-based speaker-verification model, and its cosines sit in a different, compressed range
(d-vectors are non-negative, so unrelated speakers still score around 0.5-0.7): compare
systems with it, not with the paper's SIM numbers. ``sim_wavlm`` uses transformers'
``WavLMForXVector`` (e.g. ``microsoft/wavlm-base-plus-sv``) when the user has it.
"""

from __future__ import annotations

import numpy as np

from l3se.evaluation.base import SAMPLE_RATE, Metric, Pair, cosine, from_pretrained

DEFAULT_WAVLM_SV = "microsoft/wavlm-base-plus-sv"
# Resemblyzer needs at least one 1.6 s window of voiced audio after silence trimming.
_MIN_TRIMMED = SAMPLE_RATE // 2


class ResemblyzerSim(Metric):
    name = "sim"
    columns = ("sim",)

    def __init__(self):
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder("cpu", verbose=False)

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav

        trimmed = preprocess_wav(wav)
        # Trimming can remove nearly everything from a heavily degraded output; embed it whole.
        return self._encoder.embed_utterance(trimmed if len(trimmed) >= _MIN_TRIMMED else wav)

    def score(self, pair: Pair) -> dict:
        ref = pair.reference_side("resemblyzer", lambda: self._embed(pair.ref))
        return {"sim": cosine(self._embed(pair.est), ref)}


class WavLMSim(Metric):
    name = "sim_wavlm"
    columns = ("sim_wavlm",)

    def __init__(self, model: str = DEFAULT_WAVLM_SV, local_only: bool = True):
        import transformers

        self._extractor = from_pretrained(transformers.AutoFeatureExtractor, model, local_only)
        self._model = from_pretrained(transformers.WavLMForXVector, model, local_only).eval()

    def _embed(self, wav: np.ndarray) -> np.ndarray:
        """x-vector [D] of one utterance [S]."""
        import torch

        inputs = self._extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            return self._model(**inputs).embeddings[0].numpy()

    def score(self, pair: Pair) -> dict:
        ref = pair.reference_side("wavlm_sv", lambda: self._embed(pair.ref))
        return {"sim_wavlm": cosine(self._embed(pair.est), ref)}
