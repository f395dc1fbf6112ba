"""``evaluate``: match outputs to references, score every (system, file) with the selected
metrics in parallel workers, resume from a per-file cache, and write the reports.

Work is grouped by reference file: every system's output for one reference is scored in the
same task, so reference-side work (loading, its transcript, embeddings) happens once.
The cache (``OUT/.cache/scores.jsonl``) gets one line per (system, file, metric) as soon as it
is computed, keyed by the metric's model and by size+mtime of both files; a re-run skips what
is there, so an interrupted run resumes and adding a metric computes only that metric.

Baselines (``baselines=["dfn3", "rnnoise"]``) enhance the manifest's noisy files first, into
``OUT/baselines/<name>/`` (resumable too), and are then scored like any system. Word metrics
against the reference text get a ``floor`` row, the clean reference itself through the same
recognisers, unless ``clean`` is one of the systems (its row is then the floor).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from data_sim.audio import AudioError, load_audio
from l3se.evaluation.base import SAMPLE_RATE, Metric, Pair
from l3se.evaluation.baselines import PACKAGES, BaselineUnavailable, enhance_items, load_baseline
from l3se.evaluation.inputs import (
    InputError,
    Item,
    Matching,
    items_from_outputs,
    load_reference,
    match_systems,
)
from l3se.evaluation.registry import (
    SPECS,
    build_metrics,
    metric_columns,
    model_for,
    parse_selection,
    probe_models,
)

log = logging.getLogger(__name__)

ROW_FIELDS = ("system", "id", "subset", "snr_db", "reverb", "length_diff_s", "error")
# The row of the clean reference scored with the word metrics only: what the recognisers
# themselves get wrong.
FLOOR = "floor"


@dataclass
class Results:
    """Per-file rows (one per system and matched file) and what the run could not do."""

    rows: list[dict[str, Any]]
    systems: list[str]
    metrics: list[str]  # metrics that ran
    columns: list[str]  # metric result columns, in metric order
    skipped: list[str] = field(default_factory=list)  # the 'skipped: ...' lines
    matching: dict[str, Matching] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)  # report name -> path written


def align(est: np.ndarray, n: int) -> np.ndarray:
    """Output cut or zero-padded to the reference length ``n``: [S_est] -> [n].

    Padding (not trimming the reference) keeps a too-short output from dropping the speech it
    failed to produce out of the intrusive metrics.
    """
    if len(est) >= n:
        return est[:n]
    return np.concatenate([est, np.zeros(n - len(est), dtype=est.dtype)])


def _fingerprint(*paths: str | None) -> str:
    parts = []
    for p in paths:
        if p is None:
            parts.append("-")
            continue
        try:
            st = os.stat(p)
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append("?")
    return "|".join(parts)


def _metric_key(name: str, models: dict[str, str], judge: str) -> str:
    """Cache key of a metric: its model, or for the judge its vocabulary and LM."""
    model = judge if name in ("wer_cv", "per_cv") else model_for(name, models)
    return f"{name}@{model}" if model else name


class ScoreCache:
    """Append-only JSONL of computed scores; a torn last line (interrupt) is ignored."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[tuple[str, str, str, str], dict] = {}
        self._file = None
        self._torn = False  # last line cut short by an interrupt
        if path is not None and path.is_file():
            with open(path, encoding="utf-8") as f:
                for line in f:
                    self._torn = not line.endswith("\n")
                    try:
                        e = json.loads(line)
                        self.entries[(e["system"], e["uid"], e["metric"], e["fp"])] = e["values"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue

    def get(self, system: str, uid: str, metric: str, fp: str) -> dict | None:
        return self.entries.get((system, uid, metric, fp))

    def put(self, system: str, uid: str, metric: str, fp: str, values: dict) -> None:
        self.entries[(system, uid, metric, fp)] = values
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Kept open across puts (one flush per record); close() ends it.
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            if self._torn:  # the torn record must not glue onto the next one
                self._file.write("\n")
        rec = {"system": system, "uid": uid, "metric": metric, "fp": fp, "values": values}
        self._file.write(json.dumps(rec, default=_json_default) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x).__name__)


# ---- worker side -------------------------------------------------------------------------
_WORKER_METRICS: dict[str, Metric] = {}


def _init_worker(names: Sequence[str], models: dict[str, str], local_only: bool, threads: int,
                 transcripts: Sequence[str]) -> None:
    import torch

    torch.set_num_threads(threads)
    metrics, _ = build_metrics(names, models, local_only, threads, transcripts)
    _WORKER_METRICS.update({m.name: m for m in metrics})


def _score_task(item: Item, jobs: list[tuple[str, str, list[str]]], metrics: dict[str, Metric] | None = None):
    """Score one reference's outputs. ``jobs``: (system, output path, metric names).

    Returns [(system, metric name or None, values)]; a None metric carries the row's own fields
    (length difference, or the error that stopped this output from being scored).
    """
    metrics = _WORKER_METRICS if metrics is None else metrics
    out: list[tuple[str, str | None, dict]] = []
    ref = None
    if item.clean is not None:
        try:
            ref = load_audio(item.clean, SAMPLE_RATE)
        except AudioError as e:
            return [(system, None, {"error": f"reference {e}"}) for system, _, _ in jobs]
    ref_memo: dict = {}
    for system, path, names in jobs:
        try:
            est = load_audio(path, SAMPLE_RATE)
        except AudioError as e:
            out.append((system, None, {"error": str(e)}))
            continue
        pair = Pair(est=est, ref=ref, text=item.text, ref_memo=ref_memo,
                    est_aligned=None if ref is None else align(est, len(ref)))
        row = {"length_diff_s": None if ref is None else (len(est) - len(ref)) / SAMPLE_RATE}
        out.append((system, None, row))
        for name in names:
            out.append((system, name, metrics[name].score(pair)))
    return out


# ---- driver -------------------------------------------------------------------------------
def evaluate(
    ref: str | Path | None,
    systems: dict[str, str | None],
    metrics: str | Sequence[str] = "default",
    out_dir: str | Path | None = None,
    workers: int = 1,
    models: dict[str, str] | None = None,
    local_only: bool = True,
    progress: bool = True,
    snr_bin_db: float = 5.0,
    baselines: Sequence[str] = (),
) -> Results:
    """Evaluate ``systems`` (name -> output folder; ``noisy``/``clean`` -> None for the
    manifest's own files) against ``ref`` (manifest JSONL, clean folder, or None for
    non-intrusive metrics only). ``baselines`` (names in ``baselines.PACKAGES``) enhance the
    manifest's noisy files and join the systems, before ``clean``; their outputs are kept under
    ``out_dir/baselines``. Writes reports under ``out_dir`` when given.

    Raises ``InputError`` for unusable inputs or metric selections.
    """
    models = dict(models or {})
    names = parse_selection(metrics) if isinstance(metrics, str) else parse_selection(",".join(metrics))
    if not systems and not baselines:
        raise InputError("no systems to evaluate")
    _check_names(systems, baselines)
    out = Path(out_dir) if out_dir is not None else None
    with ExitStack() as stack:
        root = out
        if root is None and baselines:
            # Without a report folder, baseline outputs live only as long as their scoring.
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="l3se-")))
        items = load_reference(ref) if ref is not None else items_from_outputs(systems)
        skipped: list[str] = []
        made = _run_baselines(baselines, items, root, progress, skipped)
        systems = _with_baselines(systems, made)
        matching = match_systems(items, systems)
        for system, m in matching.items():
            _report_mismatch(system, m)

        names = _applicable(names, items, skipped)
        word_metrics = [n for n in names if SPECS[n].needs == "text"]
        if word_metrics and "clean" not in systems:
            floor = {it.uid: it.clean for it in items if it.clean and it.text}
            if floor:
                matching[FLOOR] = Matching(outputs=floor)
                systems[FLOOR] = None
        transcripts = sorted({it.text for it in items if it.text})
        # One compute thread per worker: on a shared machine, multi-threaded torch/onnx kernels
        # stall on busy cores (measured 10x slower); parallelism comes from --workers.
        threads = 1
        in_process: dict[str, Metric] | None = None
        if workers <= 1:
            built, missing = build_metrics(names, models, local_only, threads, transcripts)
            in_process = {m.name: m for m in built}
        else:
            missing = probe_models(names, models, local_only)
        for name, model in missing:
            skipped.append(f"skipped: {name} ({model} not available)")
            print(skipped[-1], file=sys.stderr)
        names = [n for n in names if n not in {m for m, _ in missing}]
        judge = ""
        if {"wer_cv", "per_cv"} & set(names):
            from l3se.evaluation.judge import ClosedVocabulary

            judge = f"judge:{ClosedVocabulary(transcripts).fingerprint}"
        keys = {n: _metric_key(n, models, judge) for n in names}
        only = {FLOOR: set(word_metrics)}

        cache = ScoreCache(out / ".cache" / "scores.jsonl" if out else None)
        try:
            with _torch_threads(threads if in_process is not None else None):
                rows = _run(items, matching, names, keys, only, cache, workers, in_process,
                            (models, local_only, threads, transcripts), progress)
        finally:
            cache.close()
    columns = [c for n in names for c in metric_columns(n)]
    results = Results(rows=rows, systems=list(systems), metrics=names, columns=columns,
                      skipped=skipped, matching=matching)
    if out is not None:
        from l3se.evaluation.report import write_reports

        results.reports = write_reports(results, out, snr_bin_db=snr_bin_db)
    return results


def _check_names(systems: dict[str, str | None], baselines: Sequence[str]) -> None:
    for name in baselines:
        if name not in PACKAGES:
            raise InputError(f"unknown baseline {name!r}; choose from {', '.join(PACKAGES)}")
        if name in systems:
            raise InputError(f"baseline {name!r} has the name of a system")
    if len(set(baselines)) != len(baselines):
        raise InputError("a baseline is given twice")
    if FLOOR in systems:
        raise InputError(f"{FLOOR!r} is the row of the recognisers' own errors; name the system otherwise")


def _run_baselines(names: Sequence[str], items: list[Item], root: Path | None, progress: bool,
                   skipped: list[str]) -> dict[str, str]:
    """Enhance the items' noisy files with each available baseline into
    ``root/baselines/<name>``: name -> output folder."""
    if names and not any(it.noisy for it in items):
        raise InputError("baselines enhance the noisy files of a manifest; the reference has none")
    made = {}
    for name in names:
        try:
            baseline = load_baseline(name)
        except BaselineUnavailable as e:
            skipped.append(f'skipped: {name} ({e.reason}; pip install -e ".[baselines]")')
            print(skipped[-1], file=sys.stderr)
            continue
        folder = root / "baselines" / name
        enhance_items(baseline, items, folder, progress)
        made[name] = str(folder)
    return made


def _with_baselines(systems: dict[str, str | None], made: dict[str, str]) -> dict[str, str | None]:
    """The systems in their order, the baselines just before ``clean`` (else at the end)."""
    order = list(systems)
    at = order.index("clean") if "clean" in order else len(order)
    order[at:at] = made
    return {s: made.get(s, systems.get(s)) for s in order}


@contextmanager
def _torch_threads(n: int | None):
    """Run in-process scoring with ``n`` torch threads, restoring the caller's setting."""
    if n is None or "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _applicable(names: list[str], items: list[Item], skipped: list[str]) -> list[str]:
    has_ref = any(it.clean for it in items)
    has_text = any(it.text for it in items)
    keep = []
    for name in names:
        needs = SPECS[name].needs
        if (needs == "ref" and not has_ref) or (needs == "text" and not has_text):
            what = "reference audio" if needs == "ref" else "reference transcripts"
            skipped.append(f"skipped: {name} (no {what})")
            print(skipped[-1], file=sys.stderr)
        else:
            keep.append(name)
    return keep


def _report_mismatch(system: str, m: Matching) -> None:
    if m.missing:
        log.warning("system %s: %d reference(s) without an output (first: %s)",
                    system, len(m.missing), m.missing[0])
    if m.unmatched:
        log.warning("system %s: %d output(s) without a reference (first: %s)",
                    system, len(m.unmatched), m.unmatched[0])


def _run(items, matching, names, keys, only, cache, workers, in_process, build_args, progress):
    """Score what the cache lacks. ``only``: system -> the metrics it is scored with (default all);
    ``build_args``: (models, local_only, threads, transcripts) for worker processes."""
    rows: dict[tuple[str, str], dict] = {}
    tasks = []
    for it in items:
        jobs = []
        for system, m in matching.items():
            path = m.outputs.get(it.uid)
            if path is None:
                continue
            row = {"system": system, "id": it.id, "subset": it.subset, "snr_db": it.snr_db,
                   "reverb": it.reverb, "length_diff_s": None, "error": None, "_uid": it.uid}
            rows[(system, it.uid)] = row
            fp = _fingerprint(path, it.clean)
            todo = []
            for n in names:
                if not _usable(n, it) or (system in only and n not in only[system]):
                    continue
                cached = cache.get(system, it.uid, keys[n], fp)
                if cached is None:
                    todo.append(n)
                else:
                    row.update(cached)
            meta = cache.get(system, it.uid, "_file", fp)
            if todo or meta is None:
                jobs.append((system, path, todo))
            else:
                row.update(meta)
        if jobs:
            tasks.append((it, jobs))

    def collect(item: Item, results):
        for system, name, values in results:
            fp = _fingerprint(matching[system].outputs[item.uid], item.clean)
            rows[(system, item.uid)].update(values)
            # Errors are not cached: a fixed file is retried on the next run.
            if name is None and not values.get("error"):
                cache.put(system, item.uid, "_file", fp, values)
            elif name is not None:
                cache.put(system, item.uid, keys[name], fp, values)

    if tasks:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc="evaluate", unit="file", disable=not progress)
        try:
            if in_process is not None:
                for it, jobs in tasks:
                    collect(it, _score_task(it, jobs, in_process))
                    bar.update()
            else:
                _run_pool(tasks, names, build_args, workers, collect, bar)
        finally:
            bar.close()
    ordered = [rows[(s, it.uid)] for s in matching for it in items if (s, it.uid) in rows]
    for r in ordered:
        if r.get("error"):
            log.warning("%s %s: %s", r["system"], r["id"], r["error"])
    return ordered


def _usable(name: str, item: Item) -> bool:
    needs = SPECS[name].needs
    return needs is None or (needs == "ref" and item.clean is not None) or (needs == "text" and bool(item.text))


def _run_pool(tasks, names, build_args, workers, collect, bar) -> None:
    # spawn, not fork: torch and onnxruntime thread pools do not survive a fork.
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
        initargs=(names, *build_args),
    )
    finished = False
    try:
        futures = {pool.submit(_score_task, it, jobs): it for it, jobs in tasks}
        for fut in as_completed(futures):
            collect(futures[fut], fut.result())
            bar.update()
        finished = True
    finally:
        # On an interrupt, drop queued work at once; what finished is already in the cache.
        pool.shutdown(wait=finished, cancel_futures=True)

