"""The metric catalogue: names the user selects, what each needs, and how to build it.

``build_metrics`` makes the selected metrics (sharing one recogniser between WER and dWER, and
the judge between WER-CV and PER-CV; the judge is built from the eval set's ``transcripts``) and
returns, for each model-based metric whose model is missing, a ``(metric, model)`` pair for the
caller's ``skipped:`` line. ``probe_models`` does the same check cheaply (config files only),
so a parent process can report skips before its workers load the real weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from l3se.evaluation import signal
from l3se.evaluation.asr import DEFAULT_WHISPER
from l3se.evaluation.base import Metric, ModelUnavailable, Pair
from l3se.evaluation.inputs import InputError
from l3se.evaluation.model_metrics import DEFAULT_PHONEME, DEFAULT_SBS, DEFAULT_UTMOS
from l3se.evaluation.speaker import DEFAULT_WAVLM_SV


@dataclass(frozen=True)
class MetricSpec:
    name: str
    help: str
    needs: str | None = None  # "ref" (reference audio), "text" (transcript) or None
    model_key: str | None = None  # --model KEY=NAME_OR_PATH; None: weights ship in a wheel
    default_model: str | None = None


SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("dnsmos", "DNSMOS P.835 SIG/BAK/OVRL + P.808 (speechmos onnx)"),
        MetricSpec("pesq", "wide-band PESQ", needs="ref"),
        MetricSpec("stoi", "STOI", needs="ref"),
        MetricSpec("estoi", "extended STOI", needs="ref"),
        MetricSpec("sisdr", "scale-invariant SDR (dB)", needs="ref"),
        MetricSpec("wer", "WER %, pocketsphinx vs reference text", needs="text"),
        MetricSpec("dwer", "dWER %, pocketsphinx vs transcript of the clean reference", needs="ref"),
        MetricSpec("wer_cv", "WER %, the judge: pocketsphinx with the eval set's vocabulary and a "
                   "trigram LM of its transcripts, vs reference text", needs="text"),
        MetricSpec("per_cv", "phone error rate %, the judge's transcript vs reference text in CMU "
                   "phones", needs="text"),
        MetricSpec("sim", "speaker similarity, Resemblyzer GE2E d-vector", needs="ref"),
        MetricSpec("utmos", "UTMOS22 strong (torch.hub)", model_key="utmos", default_model=DEFAULT_UTMOS),
        MetricSpec("sbs", "SpeechBERTScore precision (HuBERT)", needs="ref", model_key="sbs", default_model=DEFAULT_SBS),
        MetricSpec("lps", "Levenshtein phoneme similarity (wav2vec2 phoneme CTC)", needs="ref", model_key="lps", default_model=DEFAULT_PHONEME),
        MetricSpec("sim_wavlm", "speaker similarity, WavLM x-vector", needs="ref", model_key="sim_wavlm", default_model=DEFAULT_WAVLM_SV),
        MetricSpec("wer_whisper", "WER %, Whisper vs reference text", needs="text", model_key="whisper", default_model=DEFAULT_WHISPER),
        MetricSpec("dwer_whisper", "dWER %, Whisper vs transcript of the clean reference", needs="ref", model_key="whisper", default_model=DEFAULT_WHISPER),
    )
}
# Metrics whose weights ship inside installed wheels: the default selection, runs offline.
OFFLINE = ("dnsmos", "pesq", "stoi", "estoi", "sisdr", "wer", "dwer", "wer_cv", "per_cv", "sim")
# The paper's speech-enhancement columns (Tables 4/5).
PAPER = ("dnsmos", "utmos", "sbs", "lps", "sim_wavlm", "wer_whisper", "dwer_whisper")
SELECTIONS = {"default": OFFLINE, "offline": OFFLINE, "paper": PAPER, "all": tuple(SPECS)}


def parse_selection(text: str) -> list[str]:
    """'default', 'paper', 'all' or a comma list (which may include those words)."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        group = SELECTIONS.get(part, (part,))
        for name in group:
            if name not in SPECS:
                raise InputError(f"unknown metric {name!r}; choose from {', '.join(SPECS)} "
                                 f"or {', '.join(SELECTIONS)}")
            if name not in names:
                names.append(name)
    if not names:
        raise InputError("no metrics selected")
    return names


class SignalMetric(Metric):
    """An intrusive metric computed on (reference, aligned output)."""

    needs = "ref"

    def __init__(self, name: str, fn: Callable[[np.ndarray, np.ndarray], float]):
        self.name = name
        self.columns = (name,)
        self._fn = fn

    def score(self, pair: Pair) -> dict:
        return {self.name: self._fn(pair.ref, pair.est_aligned)}


def metric_columns(name: str) -> tuple[str, ...]:
    """The result columns metric ``name`` fills, without building it."""
    if name == "dnsmos":
        from l3se.evaluation.dnsmos import DNSMOSMetric

        return DNSMOSMetric.columns
    if name in ("wer", "dwer", "wer_cv", "wer_whisper", "dwer_whisper"):
        from l3se.evaluation.asr import WERMetric

        return WERMetric.columns_for(name)
    if name == "per_cv":
        from l3se.evaluation.judge import PhoneErrorRate

        return PhoneErrorRate.columns
    return (name,)


def model_for(name: str, models: dict[str, str]) -> str | None:
    spec = SPECS[name]
    return models.get(spec.model_key, spec.default_model) if spec.model_key else None


def probe_models(names: Sequence[str], models: dict[str, str], local_only: bool) -> list[tuple[str, str]]:
    """``(metric, model)`` for each selected metric whose model cannot be found (no weights read)."""
    missing = []
    for name in names:
        model = model_for(name, models)
        if model is None:
            continue
        try:
            _probe(name, model, local_only)
        except ModelUnavailable:
            missing.append((name, model))
    return missing


def _probe(name: str, model: str, local_only: bool) -> None:
    if name == "utmos":
        from l3se.evaluation.model_metrics import hub_repo

        hub_repo(model, local_only)
        return
    import transformers

    from l3se.evaluation.base import from_pretrained

    from_pretrained(transformers.AutoConfig, model.partition("#")[0], local_only)


def build_metrics(
    names: Sequence[str], models: dict[str, str], local_only: bool = True, threads: int = 1,
    transcripts: Sequence[str] = (),
) -> tuple[list[Metric], list[tuple[str, str]]]:
    """Instantiate the selected metrics. Returns (metrics, [(skipped metric, its model)]).

    ``transcripts``: every reference text of the evaluation, the judge's vocabulary and LM.
    """
    built: list[Metric] = []
    skipped: list[tuple[str, str]] = []
    recognisers: dict[str, object] = {}
    for name in names:
        model = model_for(name, models)
        try:
            built.append(_build(name, model, local_only, threads, recognisers, transcripts))
        except ModelUnavailable as e:
            skipped.append((name, e.model))
    return built, skipped


def _build(name: str, model: str | None, local_only: bool, threads: int, recognisers: dict,
           transcripts: Sequence[str]) -> Metric:
    if name in ("pesq", "stoi", "estoi", "sisdr"):
        fns = {
            "pesq": signal.pesq_wb,
            "stoi": signal.stoi,
            "estoi": lambda r, e: signal.stoi(r, e, extended=True),
            "sisdr": signal.si_sdr,
        }
        return SignalMetric(name, fns[name])
    if name == "dnsmos":
        from l3se.evaluation.dnsmos import DNSMOSMetric

        return DNSMOSMetric(threads)
    if name in ("wer", "dwer", "wer_whisper", "dwer_whisper"):
        from l3se.evaluation.asr import PocketSphinxASR, WERMetric, WhisperASR

        key = model or "pocketsphinx"
        if key not in recognisers:
            recognisers[key] = WhisperASR(model, local_only) if model else PocketSphinxASR()
        return WERMetric(name, recognisers[key], against=SPECS[name].needs)
    if name in ("wer_cv", "per_cv"):
        from l3se.evaluation.asr import WERMetric
        from l3se.evaluation.judge import ClosedVocabulary, PhoneErrorRate

        if "judge" not in recognisers:
            if not any(transcripts):
                raise ModelUnavailable("the judge", "no reference transcripts to build it from")
            vocab = ClosedVocabulary(transcripts)
            recognisers["judge"] = (vocab, vocab.recogniser())
        vocab, asr = recognisers["judge"]
        return WERMetric(name, asr, against="text") if name == "wer_cv" else PhoneErrorRate(asr, vocab)
    if name == "sim":
        from l3se.evaluation.speaker import ResemblyzerSim

        return ResemblyzerSim()
    if name == "sim_wavlm":
        from l3se.evaluation.speaker import WavLMSim

        return WavLMSim(model, local_only)
    from l3se.evaluation import model_metrics

    cls = {"sbs": model_metrics.SpeechBERTScore, "lps": model_metrics.PhonemeSimilarity,
           "utmos": model_metrics.UTMOS}[name]
    return cls(model, local_only)
