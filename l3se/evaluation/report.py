"""Reports from ``Results``: per-file CSV/JSON, a markdown summary (mean and 95% CI per metric),
a multi-system comparison table laid out like the paper's Tables 4/5 (one row per system,
subsets side by side), a breakdown by SNR bin, and WER-vs-SNR / DNSMOS-vs-SNR plots.

Every file is written to a temporary name and renamed into place: a report is either the old
one or the new one, never half of each.

WER, dWER and PER-CV aggregate as corpus rates (total errors / total reference words or phones,
in %); the CI is still the t-interval of the per-file values. Everything else is the per-file
mean.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from data_sim.files import atomic_write
from l3se.evaluation.registry import WER_METRICS
from l3se.evaluation.runner import FLOOR

# Headline columns of the comparison table, in the paper's order, then the codec-table ones.
HEADLINE = ("dnsmos_ovrl", "utmos", "sbs", "lps", "sim_wavlm", "sim", "wer", "dwer", "wer_cv",
            "per_cv", "wer_whisper", "dwer_whisper", "pesq", "stoi", "estoi", "sisdr")
LABELS = {"dnsmos_ovrl": "DNSMOS", "utmos": "UTMOS", "sbs": "SBS", "lps": "LPS",
          "sim_wavlm": "SIM", "sim": "SIM-GE2E", "wer": "WER", "dwer": "dWER",
          "wer_cv": "WER-CV", "per_cv": "PER-CV", "wer_whisper": "WER-Whisper", "dwer_whisper": "dWER-Whisper", "pesq": "PESQ",
          "stoi": "STOI", "estoi": "ESTOI", "sisdr": "SI-SDR"}
# Plots of a metric against input SNR: (column, axis label, file name).
PLOTS = (("wer", "WER (%)", "wer_vs_snr.png"), ("wer_cv", "WER-CV (%), the judge", "wer_cv_vs_snr.png"),
         ("dnsmos_ovrl", "DNSMOS OVRL", "dnsmos_vs_snr.png"))


def finite(rows: Iterable[dict], column: str) -> np.ndarray:
    """Finite numeric values of ``column`` over ``rows``: float64 [N]."""
    vals = [r.get(column) for r in rows]
    arr = np.array([v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)],
                   dtype=np.float64)
    return arr[np.isfinite(arr)]


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (NaN half-width below two values)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan")
    from scipy.stats import t

    return mean, float(t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def aggregate(rows: list[dict], column: str) -> dict[str, float]:
    """{'value', 'mean', 'ci95', 'n'}; 'value' is corpus WER for WER columns, else the mean."""
    vals = finite(rows, column)
    mean, ci = mean_ci(vals)
    value = mean
    if column in WER_METRICS:
        words = finite(rows, f"{column}_words").sum()
        value = 100.0 * finite(rows, f"{column}_errors").sum() / words if words else float("nan")
    return {"value": value, "mean": mean, "ci95": ci, "n": int(len(vals))}


def summarise(results) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """system -> subset ('all' too when there are several) -> column -> aggregate."""
    out: dict = {}
    subsets = _subsets(results.rows)
    for system in results.systems:
        rows = [r for r in results.rows if r["system"] == system and not r.get("error")]
        groups = {s: [r for r in rows if r["subset"] == s] for s in subsets}
        if len(subsets) > 1:
            groups["all"] = rows
        out[system] = {g: {c: aggregate(rs, c) for c in _numeric(results.columns)}
                       for g, rs in groups.items()}
    return out


def _subsets(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["subset"] for r in rows))


def _numeric(columns: list[str]) -> list[str]:
    return [c for c in columns if not c.endswith(("_hyp", "_errors", "_words"))]


def _fmt(x: float, column: str = "") -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.2f}" if column in WER_METRICS or column == "sisdr" else f"{x:.3f}"


def comparison(results, summary) -> tuple[list[str], list[list[str]]]:
    """(header, rows) with one row per system; columns are subset x headline metric."""
    heads = [c for c in HEADLINE if c in results.columns]
    subsets = [s for s in _subsets(results.rows)]
    header = ["system"] + [
        (f"{s} " if len(subsets) > 1 else "") + LABELS[c] for s in subsets for c in heads
    ]
    table = []
    for system in results.systems:
        cells = [system]
        for s in subsets:
            agg = summary[system].get(s, {})
            cells += [_fmt(agg[c]["value"], c) if c in agg else "–" for c in heads]
        table.append(cells)
    return header, table


def format_comparison(results) -> str:
    """The comparison table as aligned plain text, for terminals."""
    header, rows = comparison(results, summarise(results))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]
    )


def format_costs(results) -> str:
    """What each metric this run computed cost, in CPU seconds per minute of the audio it scored,
    costliest first, and the scoring's wall time; empty when everything came from the cache."""
    if not results.costs:
        return ""
    per_minute = {n: 60.0 * cpu / audio for n, (cpu, audio) in results.costs.items() if audio > 0}
    lines = ["CPU seconds per minute of audio:"]
    lines += [f"  {n:13s} {c:7.1f}" for n, c in sorted(per_minute.items(), key=lambda kv: -kv[1])]
    lines.append(f"  {'total':13s} {sum(per_minute.values()):7.1f}")
    workers = "1 worker" if results.workers == 1 else f"{results.workers} workers"
    lines.append(f"scoring took {results.wall_s:.1f} s with {workers}")
    return "\n".join(lines)


def markdown_comparison(results) -> str:
    """The comparison table as markdown, for model cards and READMEs."""
    return _md_table(*comparison(results, summarise(results)))


def snr_bins(results, width: float) -> list[dict[str, Any]]:
    """Per system and SNR bin [lo, lo+width): n and every metric's aggregate value."""
    out = []
    for system in results.systems:
        rows = [r for r in results.rows if r["system"] == system and r.get("snr_db") is not None
                and not r.get("error")]
        bins: dict[float, list[dict]] = {}
        for r in rows:
            bins.setdefault(math.floor(r["snr_db"] / width) * width, []).append(r)
        for lo in sorted(bins):
            entry = {"system": system, "snr_lo": lo, "snr_hi": lo + width, "n": len(bins[lo])}
            entry.update({c: aggregate(bins[lo], c)["value"] for c in _numeric(results.columns)})
            out.append(entry)
    return out


def _csv(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _markdown(results, summary, comp, bins) -> str:
    parts = ["# Evaluation summary\n",
             f"Systems: {', '.join(results.systems)}. Metrics: {', '.join(results.metrics)}.\n",
             "WER/dWER: corpus WER in % (total errors / total reference words); other metrics:",
             "mean over files. ± is the 95% t-interval of the per-file values.\n"]
    if FLOOR in results.systems or "clean" in results.systems:
        row = FLOOR if FLOOR in results.systems else "clean"
        parts.append(f"Row {row}: the clean reference through the word metrics, i.e. the "
                     "recognisers' own errors (the floor no system can be expected to beat).\n")
    parts += ["## Comparison\n", _md_table(*comp)]
    for system, groups in summary.items():
        parts.append(f"\n## {system}\n")
        for group, aggs in groups.items():
            head = ["metric", "value", "mean ± 95% CI", "n"]
            body = [[c, _fmt(a["value"], c), f"{_fmt(a['mean'], c)} ± {_fmt(a['ci95'], c)}",
                     str(a["n"])] for c, a in aggs.items()]
            parts += [f"\n### {group}\n", _md_table(head, body)]
    if bins:
        cols = [c for c in ("wer", "dwer", "wer_cv", "per_cv", "dnsmos_ovrl", "pesq", "stoi")
                if c in results.columns]
        head = ["system", "SNR (dB)", "n"] + [LABELS[c] for c in cols]
        body = [[b["system"], f"[{b['snr_lo']:g}, {b['snr_hi']:g})", str(b["n"])]
                + [_fmt(b[c], c) for c in cols] for b in bins]
        parts += ["\n## By SNR\n", _md_table(head, body)]
    problems = _problems(results)
    if problems:
        parts += ["\n## Not evaluated\n"] + [f"- {p}" for p in problems]
    return "\n".join(parts) + "\n"


def _problems(results) -> list[str]:
    lines = list(results.skipped)
    for system, m in results.matching.items():
        if m.missing:
            lines.append(f"{system}: {len(m.missing)} reference(s) without an output, e.g. {m.missing[0]}")
        if m.unmatched:
            lines.append(f"{system}: {len(m.unmatched)} output(s) without a reference, e.g. {m.unmatched[0]}")
    errors = [r for r in results.rows if r.get("error")]
    lines += [f"{r['system']} {r['id']}: {r['error']}" for r in errors]
    return lines


def _plot(bins: list[dict], column: str, ylabel: str, path: Path) -> bool:
    series = {}
    for b in bins:
        if np.isfinite(b.get(column, float("nan"))):
            series.setdefault(b["system"], []).append(((b["snr_lo"] + b["snr_hi"]) / 2, b[column]))
    if not series:
        return False
    # A bare Figure renders through Agg for savefig without touching pyplot's global backend.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for system, pts in series.items():
        ax.plot(*zip(*pts), marker="o", label=system)
    ax.set_xlabel("input SNR (dB, bin centre)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())
    return True


def write_reports(results, out: Path, snr_bin_db: float = 5.0) -> dict[str, str]:
    """Write every report under ``out``; returns {name: path}."""
    out = Path(out)
    summary = summarise(results)
    comp = comparison(results, summary)
    bins = snr_bins(results, snr_bin_db)
    written: dict[str, str] = {}

    def put(name: str, data: bytes | str) -> None:
        atomic_write(out / name, data)
        written[name] = str(out / name)

    fields = ["system", "id", "subset", "snr_db", "reverb", "length_diff_s"] + results.columns + ["error"]
    put("per_file.csv", _csv(fields, ([r.get(f) for f in fields] for r in results.rows)))
    put("per_file.json", json.dumps([{f: r.get(f) for f in fields} for r in results.rows], indent=1))
    put("summary.json", json.dumps({"summary": summary, "snr_bins": bins, "skipped": results.skipped},
                                   indent=1))
    put("comparison.csv", _csv(*comp))
    put("summary.md", _markdown(results, summary, comp, bins))
    if bins:
        put("snr_bins.csv", _csv(list(bins[0]), ([b[k] for k in bins[0]] for b in bins)))
        for column, label, name in PLOTS:
            if column in results.columns and _plot(bins, column, label, out / name):
                written[name] = str(out / name)
    return written
