"""Metrics that need a pretrained network the wheel does not ship: SpeechBERTScore, LPS, UTMOS.

Each loads by hub name or local path (``local_only`` keeps it to the local cache, the default)
and raises ``ModelUnavailable`` when the model is not there.

- SpeechBERTScore (Saeki et al., 2024): BERTScore over SSL frame features. Precision = mean over
  output frames of the best cosine to any reference frame (the score the paper reports).
  Default ``facebook/hubert-base-ls960``, layer 8; ``NAME#LAYER`` picks another layer.
- LPS, Levenshtein phoneme similarity (Pirklbauer et al., 2023): ``1 - d / len(ref)`` with ``d``
  the edit distance between the greedy CTC phoneme sequences of output and reference
  (default ``facebook/wav2vec2-lv-60-espeak-cv-ft``). Distances count phoneme tokens; URGENT
  2025's script counts the decoded IPA characters, so multi-character phonemes weigh less here.
  Not clipped: an output with more errors than reference phonemes goes below 0.
- UTMOS (Saeki et al., 2022) through torch.hub (``tarepan/SpeechMOS:v1.2.0``, ``utmos22_strong``):
  a local hubconf folder, or the repo already in torch's hub cache.
"""

from __future__ import annotations

import os

import numpy as np

from l3se.evaluation.base import SAMPLE_RATE, Metric, ModelUnavailable, Pair, from_pretrained

DEFAULT_SBS = "facebook/hubert-base-ls960#8"
DEFAULT_PHONEME = "facebook/wav2vec2-lv-60-espeak-cv-ft"
DEFAULT_UTMOS = "tarepan/SpeechMOS:v1.2.0"
UTMOS_ENTRY = "utmos22_strong"


def _waveform_inputs(extractor, wav: np.ndarray):
    return extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")


class SpeechBERTScore(Metric):
    name = "sbs"
    columns = ("sbs",)

    def __init__(self, model: str = DEFAULT_SBS, local_only: bool = True):
        import transformers

        name, _, layer = model.partition("#")
        self._extractor = from_pretrained(transformers.AutoFeatureExtractor, name, local_only)
        self._model = from_pretrained(transformers.AutoModel, name, local_only).eval()
        self._layer = int(layer) if layer else 8
        n_states = self._model.config.num_hidden_layers + 1
        if not 0 <= self._layer < n_states:
            raise ModelUnavailable(model, f"layer {self._layer} not in 0..{n_states - 1}")

    def features(self, wav: np.ndarray) -> np.ndarray:
        """L2-normalised frame features [T, D] of one signal [S] at the chosen layer."""
        import torch

        with torch.inference_mode():
            out = self._model(**_waveform_inputs(self._extractor, wav), output_hidden_states=True)
        feats = out.hidden_states[self._layer][0].double().numpy()
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def score(self, pair: Pair) -> dict:
        ref = pair.reference_side("sbs", lambda: self.features(pair.ref))
        est = self.features(pair.est)
        # [T_est, T_ref] cosines; precision matches every output frame to its best reference frame.
        return {"sbs": float((est @ ref.T).max(axis=1).mean())}


class PhonemeSimilarity(Metric):
    name = "lps"
    columns = ("lps",)

    def __init__(self, model: str = DEFAULT_PHONEME, local_only: bool = True):
        import transformers

        self._extractor = from_pretrained(transformers.AutoFeatureExtractor, model, local_only)
        self._model = from_pretrained(transformers.Wav2Vec2ForCTC, model, local_only).eval()
        cfg = self._model.config
        self._blank = cfg.pad_token_id
        self._drop = {i for i in (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) if i is not None}

    def phonemes(self, wav: np.ndarray) -> list[int]:
        """Greedy CTC decoding of one signal [S]: repeats merged, blanks and specials dropped."""
        import torch

        with torch.inference_mode():
            ids = self._model(**_waveform_inputs(self._extractor, wav)).logits[0].argmax(-1).tolist()
        merged = [t for i, t in enumerate(ids) if i == 0 or t != ids[i - 1]]
        return [t for t in merged if t not in self._drop]

    def score(self, pair: Pair) -> dict:
        from rapidfuzz.distance import Levenshtein

        ref = pair.reference_side("lps", lambda: self.phonemes(pair.ref))
        if not ref:
            return {"lps": float("nan")}
        return {"lps": 1.0 - Levenshtein.distance(ref, self.phonemes(pair.est)) / len(ref)}


class UTMOS(Metric):
    name = "utmos"
    columns = ("utmos",)

    def __init__(self, model: str = DEFAULT_UTMOS, local_only: bool = True):
        import torch

        repo, source = hub_repo(model, local_only)
        try:
            self._predictor = torch.hub.load(repo, UTMOS_ENTRY, source=source, trust_repo=True)
        except (OSError, RuntimeError, AttributeError) as e:  # no hubconf entry, checkpoint missing
            raise ModelUnavailable(model, str(e).splitlines()[0] if str(e) else "") from None
        self._predictor.eval()

    def score(self, pair: Pair) -> dict:
        import torch

        with torch.inference_mode():
            mos = self._predictor(torch.from_numpy(pair.est)[None], SAMPLE_RATE)
        return {"utmos": float(mos.reshape(-1)[0])}


def hub_repo(model: str, local_only: bool) -> tuple[str, str]:
    """(repo_or_dir, source) for ``torch.hub.load``: a folder, the hub cache, or GitHub."""
    import torch

    if os.path.isdir(model):
        return model, "local"
    repo, _, ref = model.partition(":")
    cached = os.path.join(torch.hub.get_dir(), f"{repo.replace('/', '_')}_{ref or 'main'}")
    if os.path.isdir(cached):
        return cached, "local"
    if local_only:
        raise ModelUnavailable(model)
    return model, "github"
