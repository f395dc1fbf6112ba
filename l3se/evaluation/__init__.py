"""Evaluation of enhanced speech: faithfulness (WER/dWER, LPS, SpeechBERTScore, speaker
similarity), quality (DNSMOS, UTMOS) and signal metrics (PESQ, STOI, ESTOI, SI-SDR).

``evaluate(ref, systems, metrics=..., out_dir=..., baselines=...)`` is the entry point (see
``runner``; reference enhancers in ``baselines``, the closed-vocabulary word judge in ``judge``);
``l3se evaluate`` is its command line. Submodules import their heavy dependencies lazily.
"""

from l3se.evaluation.base import ModelUnavailable
from l3se.evaluation.inputs import InputError
from l3se.evaluation.registry import OFFLINE, PAPER, SPECS
from l3se.evaluation.runner import Results, evaluate

__all__ = ["OFFLINE", "PAPER", "SPECS", "InputError", "ModelUnavailable", "Results", "evaluate"]
