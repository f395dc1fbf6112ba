"""Offline English ASR and the WER / dWER metrics built on it.

Two recognisers share one interface, ``transcribe(wav [S] float32 16 kHz) -> str``:
pocketsphinx (CMU US-English acoustic model and LM shipped in the wheel: fully offline, but a
far weaker recogniser than the paper's Whisper large-v3, so its absolute WERs are much higher)
and Whisper through transformers, loaded by hub name or local path when the user has it.

WER compares the output's transcript with the reference text; dWER (used for DNS1, which has no
transcripts) compares it with the transcript of the clean reference, so the clean signal itself
scores 0.
"""

from __future__ import annotations

import numpy as np

from l3se.evaluation.base import SAMPLE_RATE, Metric, Pair, from_pretrained
from l3se.evaluation.text import word_errors

DEFAULT_WHISPER = "openai/whisper-large-v3"


class PocketSphinxASR:
    """pocketsphinx 5 ``Decoder`` with its bundled en-us model, one utterance per call.

    ``config`` goes to the ``Decoder`` as it is (e.g. ``lm=`` and ``dict=`` for another
    language model and dictionary).
    """

    label = "pocketsphinx en-us"

    def __init__(self, **config):
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **config)
        self._initial_cmn = self._decoder.get_cmn()

    def transcribe(self, wav: np.ndarray) -> str:
        pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        # The front end adapts its cepstral mean (and more) across utterances, so a transcript would
        # depend on what was decoded before it: reset both so each file is decoded from scratch.
        self._decoder.reinit_feat()
        self._decoder.set_cmn(self._initial_cmn)
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class WhisperASR:
    """Greedy Whisper transcription (``WhisperForConditionalGeneration`` + its processor).

    Inputs longer than 30 s are cut to Whisper's window; eval utterances are 5-10 s.
    """

    def __init__(self, name: str = DEFAULT_WHISPER, local_only: bool = True, max_new_tokens: int = 200):
        import transformers

        self.label = name
        self._processor = from_pretrained(transformers.WhisperProcessor, name, local_only)
        self._model = from_pretrained(transformers.WhisperForConditionalGeneration, name, local_only)
        self._model.eval()
        gen = self._model.generation_config
        # English-only checkpoints (*.en, tiny test models) take no language/task prompt.
        self._prompt = (
            {"language": "en", "task": "transcribe"} if getattr(gen, "lang_to_id", None) else {}
        )
        # Room for the start/language/task prompt within the decoder's positions.
        self._max_new_tokens = min(max_new_tokens, self._model.config.max_target_positions - 4)

    def transcribe(self, wav: np.ndarray) -> str:
        import torch

        feats = self._processor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = self._model.generate(
                feats, max_new_tokens=self._max_new_tokens, **self._prompt
            )
        return self._processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


class WERMetric(Metric):
    """WER (against the reference text) or dWER (against the clean reference's transcript).

    Columns: ``<name>`` in percent, ``<name>_errors``/``<name>_words`` (for corpus WER) and
    ``<name>_hyp``, the normalisable raw transcript, so results can be audited.
    """

    def __init__(self, name: str, asr, against: str):
        self.name = name
        self.columns = self.columns_for(name)
        self._asr = asr
        self._against = against  # "text" (WER) or "ref" (dWER)

    @staticmethod
    def columns_for(name: str) -> tuple[str, ...]:
        return (name, f"{name}_errors", f"{name}_words", f"{name}_hyp")

    def score(self, pair: Pair) -> dict:
        hyp = pair.output_side(("asr", id(self._asr)), lambda: self._asr.transcribe(pair.est))
        if self._against == "text":
            reference = pair.text
        else:
            reference = pair.reference_side(
                ("asr", id(self._asr)), lambda: self._asr.transcribe(pair.ref)
            )
        counts = word_errors(reference, hyp)
        return {
            self.name: counts.wer,
            f"{self.name}_errors": counts.errors,
            f"{self.name}_words": counts.ref_words,
            f"{self.name}_hyp": hyp,
        }
