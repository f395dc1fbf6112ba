import math

import pytest

from l3se.evaluation.registry import SPECS, WER_METRICS
from l3se.evaluation.report import aggregate, format_costs
from l3se.evaluation.runner import Results


def _rows(errors, words):
    return [{"wer": 100.0 * e / w, "wer_errors": e, "wer_words": w, "pesq": 1.0 + e}
            for e, w in zip(errors, words)]


def test_corpus_wer_weights_files_by_their_words():
    rows = _rows([1, 6, 3], [10, 20, 10])  # per-file 10%, 30%, 30%
    agg = aggregate(rows, "wer")
    assert agg["value"] == pytest.approx(100.0 * 10 / 40)  # corpus: 25%, not the mean 23.3%
    assert agg["mean"] == pytest.approx(70.0 / 3)
    assert agg["n"] == 3


def test_ci_is_the_t_interval_of_the_per_file_values():
    rows = _rows([1, 2, 3], [10, 10, 10])  # 10, 20, 30: sd 10
    agg = aggregate(rows, "wer")
    # t(0.975, 2 degrees of freedom) = 4.302653
    assert agg["ci95"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-6)
    assert aggregate(rows, "pesq")["ci95"] == pytest.approx(4.302653 * 1 / math.sqrt(3), rel=1e-6)


def test_other_columns_are_means_and_unusable_values_are_left_out():
    rows = _rows([1, 3], [10, 10]) + [{"pesq": float("nan")}, {"pesq": None}, {"pesq": True}]
    agg = aggregate(rows, "pesq")
    # Values 2 and 4: sd sqrt(2), n 2, t(0.975, 1) = 12.7062047.
    assert agg == {"value": 3.0, "mean": 3.0, "ci95": pytest.approx(12.7062047, rel=1e-6), "n": 2}


def test_single_and_empty_groups():
    one = aggregate(_rows([2], [8]), "wer")
    assert one["value"] == 25.0 and math.isnan(one["ci95"])
    none = aggregate([], "wer")
    assert none["n"] == 0 and math.isnan(none["value"]) and math.isnan(none["mean"])


def test_every_error_rate_metric_fills_what_its_corpus_rate_is_made_of():
    assert {"wer", "dwer", "wer_cv", "per_cv", "wer_whisper", "dwer_whisper"} == set(WER_METRICS)
    for name in WER_METRICS:
        assert {name, f"{name}_errors", f"{name}_words"} <= set(SPECS[name].columns), name


def test_costs_are_cpu_seconds_per_minute_of_the_audio_each_metric_scored():
    res = Results(rows=[], systems=[], metrics=["pesq", "wer"], columns=[], workers=2, wall_s=12.5,
                  costs={"pesq": [3.0, 120.0], "wer": [60.0, 30.0]})
    assert format_costs(res).splitlines() == [
        "CPU seconds per minute of audio:",
        "  wer             120.0",
        "  pesq              1.5",
        "  total           121.5",
        "scoring took 12.5 s with 2 workers",
    ]
    res.costs = {}  # all from the cache
    assert format_costs(res) == ""
