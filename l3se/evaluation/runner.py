"""``evaluate``: match outputs to references, score every (system, file) with the selected
metrics in parallel workers (by default one per available core, each with one compute thread),
resume from a per-file cache, and write the reports.

The inputs are resolved into a ``Plan`` (the items, each system's outputs, the metrics whose
data and models are there, workers, the cache folder); worker processes build their metrics
from it.

Work is grouped by reference file: every system's output for one reference is scored in the
same task, so reference-side work (loading, its transcript, embeddings) happens once. Each
metric's CPU time and the audio it scored are summed into ``Results.costs``, so that a run can say
what each metric cost per minute of audio.

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
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

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
from l3se.evaluation.judge import ClosedVocabulary
from l3se.evaluation.registry import SPECS, build_metrics, parse_selection, probe_models

log = logging.getLogger(__name__)

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
    # metric -> [CPU seconds, seconds of audio] of what this run computed (cached scores cost 0).
    costs: dict[str, list[float]] = field(default_factory=dict)
    workers: int = 1
    wall_s: float = 0.0  # scoring only: matching, baselines and reports excluded


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


# ---- the plan ----------------------------------------------------------------------------
@dataclass
class Plan:
    """One evaluation, resolved: each system's output for each reference item, the metrics that
    run, the models they load, how many processes score and where the scores are cached.
    Worker processes get it to build their own metrics."""

    items: list[Item]
    matching: dict[str, Matching]  # system -> its outputs, in table order
    metrics: list[str]  # in column order
    models: dict[str, str]  # --model KEY -> name or path
    local_only: bool = True
    workers: int | None = None  # None: one per available core, at most one per item
    out: Path | None = None  # the report folder, which holds the score cache
    # One compute thread per process: on a shared machine, multi-threaded torch/onnx kernels
    # stall on busy cores (measured 10x slower); parallelism comes from workers.
    threads: int = 1

    def __post_init__(self):
        if self.workers is None:
            self.workers = max(1, min(available_cores(), len(self.items)))

    @property
    def in_process(self) -> bool:
        return self.workers <= 1

    @property
    def transcripts(self) -> list[str]:
        return sorted({it.text for it in self.items if it.text})

    @property
    def columns(self) -> list[str]:
        return [c for n in self.metrics for c in SPECS[n].columns]

    def metrics_for(self, system: str, item: Item) -> list[str]:
        """The metrics ``system``'s output for ``item`` is scored with: those whose data the
        item has; the floor row gets only the word metrics against the reference text."""
        return [n for n in self.metrics
                if _has_data(SPECS[n].needs, item) and (system != FLOOR or _scores_floor(n))]

    def cache_keys(self) -> dict[str, str]:
        """Per metric, its cache key: its name with what its scores depend on besides the two
        files, its model or the judge's vocabulary and LM."""
        judge = ""
        if any(SPECS[n].judge for n in self.metrics):
            judge = f"judge:{ClosedVocabulary(self.transcripts).fingerprint}"
        keys = {}
        for n in self.metrics:
            model = judge if SPECS[n].judge else SPECS[n].model(self.models)
            keys[n] = f"{n}@{model}" if model else n
        return keys


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _has_data(needs: str | None, item: Item) -> bool:
    return needs is None or (needs == "ref" and item.clean is not None) or (needs == "text" and bool(item.text))


def _scores_floor(name: str) -> bool:
    spec = SPECS[name]
    return spec.error_rate and spec.needs == "text"


class Job(NamedTuple):
    """One output of a reference item to score, with the metrics the cache lacks for it."""

    system: str
    path: str
    metrics: list[str]


Task = tuple[Item, list[Job]]
# What scoring a task returns: (system, metric name or None, values) per output and metric.
Scores = list[tuple[str, str | None, dict]]
# metric -> [CPU seconds, seconds of audio scored].
Costs = dict[str, list[float]]


# ---- scoring -----------------------------------------------------------------------------
def _score_task(item: Item, jobs: list[Job], metrics: dict[str, Metric]) -> tuple[Scores, Costs]:
    """Score one reference's outputs; the scores and what each metric cost. A None metric
    carries the row's own fields (length difference, or the error that stopped this output from
    being scored). A reference-side computation (a transcript, an embedding) is charged to the
    metric whose first call made it."""
    out: Scores = []
    costs: Costs = {}
    ref = None
    if item.clean is not None:
        try:
            ref = load_audio(item.clean, SAMPLE_RATE)
        except AudioError as e:
            return [(job.system, None, {"error": f"reference {e}"}) for job in jobs], costs
    ref_memo: dict = {}
    for job in jobs:
        try:
            est = load_audio(job.path, SAMPLE_RATE)
        except AudioError as e:
            out.append((job.system, None, {"error": str(e)}))
            continue
        pair = Pair(est=est, ref=ref, text=item.text, ref_memo=ref_memo,
                    est_aligned=None if ref is None else align(est, len(ref)))
        row = {"length_diff_s": None if ref is None else (len(est) - len(ref)) / SAMPLE_RATE}
        out.append((job.system, None, row))
        for name in job.metrics:
            start = time.process_time()
            out.append((job.system, name, metrics[name].score(pair)))
            cost = costs.setdefault(name, [0.0, 0.0])
            cost[0] += time.process_time() - start
            cost[1] += len(est) / SAMPLE_RATE
    return out, costs


# A worker process's metrics, built once by _init_worker.
_worker_metrics: dict[str, Metric] = {}


def _init_worker(plan: Plan) -> None:
    import torch

    torch.set_num_threads(plan.threads)
    built, _ = build_metrics(plan.metrics, plan.models, plan.local_only, plan.threads, plan.transcripts)
    _worker_metrics.update({m.name: m for m in built})


def _score_in_worker(item: Item, jobs: list[Job]) -> tuple[Scores, Costs]:
    return _score_task(item, jobs, _worker_metrics)


def _score_here(tasks: list[Task], metrics: dict[str, Metric], threads: int
                ) -> Iterator[tuple[Item, tuple[Scores, Costs]]]:
    with _torch_threads(threads):
        for item, jobs in tasks:
            yield item, _score_task(item, jobs, metrics)


def _score_in_pool(plan: Plan, tasks: list[Task]) -> Iterator[tuple[Item, tuple[Scores, Costs]]]:
    # spawn, not fork: torch and onnxruntime thread pools do not survive a fork.
    pool = ProcessPoolExecutor(max_workers=plan.workers, mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(plan,))
    finished = False
    try:
        # Workers start as tasks are submitted, all of them here.
        with _worker_threads(plan.threads):
            futures = {pool.submit(_score_in_worker, item, jobs): item for item, jobs in tasks}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
        finished = True
    finally:
        # On an interrupt, drop queued work at once; what finished is already in the cache.
        pool.shutdown(wait=finished, cancel_futures=True)


@contextmanager
def _worker_threads(n: int):
    """Worker processes started inside get ``n`` BLAS/OpenMP threads: numpy's pool is sized
    when it is imported, before a worker's initializer runs, and would otherwise take every core
    in every worker."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    before = {k: os.environ.get(k) for k in names}
    os.environ.update(dict.fromkeys(names, str(n)))
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _torch_threads(n: int):
    """Run in-process scoring with ``n`` torch threads, restoring the caller's setting."""
    if "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- driver -------------------------------------------------------------------------------
def evaluate(
    ref: str | Path | None,
    systems: dict[str, str | None],
    metrics: str | Sequence[str] = "default",
    out_dir: str | Path | None = None,
    workers: int | None = None,
    models: dict[str, str] | None = None,
    local_only: bool = True,
    progress: bool = True,
    snr_bin_db: float = 5.0,
    baselines: Sequence[str] = (),
) -> Results:
    """Evaluate ``systems`` (name -> output folder; ``noisy``/``clean`` -> None for the
    manifest's own files) against ``ref`` (manifest JSONL, clean folder, or None for
    non-intrusive metrics only). ``workers``: scoring processes, one compute thread each; None
    takes one per available core (at most one per reference item), 1 scores in this process. ``baselines`` (names in ``baselines.PACKAGES``) enhance the
    manifest's noisy files and join the systems, before ``clean``; their outputs are kept under
    ``out_dir/baselines``. Writes reports under ``out_dir`` when given.

    What cannot be evaluated (a metric without its data or model, a missing baseline) is
    logged as a ``skipped:`` warning and listed in ``Results.skipped``.
    Raises ``InputError`` for unusable inputs or metric selections.
    """
    selected = parse_selection(metrics if isinstance(metrics, str) else ",".join(metrics))
    if not systems and not baselines:
        raise InputError("no systems to evaluate")
    _check_names(systems, baselines)
    out = Path(out_dir) if out_dir is not None else None
    skipped: list[str] = []
    with ExitStack() as stack:
        root = out
        if root is None and baselines:
            # Without a report folder, baseline outputs live only as long as their scoring.
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="l3se-")))
        items = load_reference(ref) if ref is not None else items_from_outputs(systems)
        made = _run_baselines(baselines, items, root, progress, skipped)
        matching = match_systems(items, _with_baselines(systems, made))
        for system, m in matching.items():
            _report_mismatch(system, m)
        names = _applicable(selected, items, skipped)
        if "clean" not in matching and any(_scores_floor(n) for n in names):
            floor = {it.uid: it.clean for it in items if it.clean and it.text}
            if floor:
                matching[FLOOR] = Matching(outputs=floor)
        plan = Plan(items, matching, names, dict(models or {}), local_only, workers, out)
        plan, built = _load_metrics(plan, skipped)
        start = time.perf_counter()
        rows, costs = _run(plan, built, progress)
        wall = time.perf_counter() - start
    results = Results(rows=rows, systems=list(plan.matching), metrics=plan.metrics,
                      columns=plan.columns, skipped=skipped, matching=plan.matching,
                      costs=costs, workers=plan.workers, wall_s=wall)
    if out is not None:
        from l3se.evaluation.report import write_reports

        results.reports = write_reports(results, out, snr_bin_db=snr_bin_db)
    return results


def _skip(skipped: list[str], line: str) -> None:
    """A ``skipped:`` line for the reports, and for the user now."""
    skipped.append(line)
    log.warning("%s", line)


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
            _skip(skipped, f'skipped: {name} ({e.reason}; pip install -e ".[baselines]")')
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


def _applicable(names: list[str], items: list[Item], skipped: list[str]) -> list[str]:
    """The metrics whose data at least one item has."""
    keep = []
    for name in names:
        needs = SPECS[name].needs
        if any(_has_data(needs, it) for it in items):
            keep.append(name)
        else:
            what = "reference audio" if needs == "ref" else "reference transcripts"
            _skip(skipped, f"skipped: {name} (no {what})")
    return keep


def _load_metrics(plan: Plan, skipped: list[str]) -> tuple[Plan, dict[str, Metric]]:
    """Build the plan's metrics here, or for worker processes only check that their models are
    there; the plan without the metrics whose model is missing, and the metrics built."""
    if plan.in_process:
        built, missing = build_metrics(plan.metrics, plan.models, plan.local_only, plan.threads,
                                       plan.transcripts)
    else:
        built, missing = [], probe_models(plan.metrics, plan.models, plan.local_only)
    for name, model in missing:
        _skip(skipped, f"skipped: {name} ({model} not available)")
    gone = {name for name, _ in missing}
    return replace(plan, metrics=[n for n in plan.metrics if n not in gone]), {m.name: m for m in built}


def _report_mismatch(system: str, m: Matching) -> None:
    if m.missing:
        log.warning("system %s: %d reference(s) without an output (first: %s)",
                    system, len(m.missing), m.missing[0])
    if m.unmatched:
        log.warning("system %s: %d output(s) without a reference (first: %s)",
                    system, len(m.unmatched), m.unmatched[0])


def _run(plan: Plan, metrics: dict[str, Metric], progress: bool) -> tuple[list[dict], Costs]:
    """Score what the cache lacks, with ``metrics`` here or in the plan's worker processes;
    the rows in table order (systems, then items), and what each metric cost."""
    cache = ScoreCache(plan.out / ".cache" / "scores.jsonl" if plan.out else None)
    keys = plan.cache_keys()
    rows, tasks = _todo(plan, cache, keys)
    costs: Costs = {}

    def collect(item: Item, scored: tuple[Scores, Costs]) -> None:
        results, spent = scored
        for name, (cpu, audio) in spent.items():
            total = costs.setdefault(name, [0.0, 0.0])
            total[0] += cpu
            total[1] += audio
        for system, name, values in results:
            fp = _fingerprint(plan.matching[system].outputs[item.uid], item.clean)
            rows[(system, item.uid)].update(values)
            # Errors are not cached: a fixed file is retried on the next run.
            if name is None and not values.get("error"):
                cache.put(system, item.uid, "_file", fp, values)
            elif name is not None:
                cache.put(system, item.uid, keys[name], fp, values)

    try:
        if tasks:
            from tqdm import tqdm

            scores = (_score_here(tasks, metrics, plan.threads) if plan.in_process
                      else _score_in_pool(plan, tasks))
            with (tqdm(total=len(tasks), desc="evaluate", unit="file", disable=not progress) as bar,
                  closing(scores)):
                for item, results in scores:
                    collect(item, results)
                    bar.update()
    finally:
        cache.close()
    ordered = [rows[(s, it.uid)] for s in plan.matching for it in plan.items if (s, it.uid) in rows]
    for r in ordered:
        if r.get("error"):
            log.warning("%s %s: %s", r["system"], r["id"], r["error"])
    return ordered, {n: costs[n] for n in plan.metrics if n in costs}


def _todo(plan: Plan, cache: ScoreCache, keys: dict[str, str]) -> tuple[dict[tuple[str, str], dict], list[Task]]:
    """Every (system, item uid) row, filled from the cache, and the tasks for what it lacks."""
    rows: dict[tuple[str, str], dict] = {}
    tasks: list[Task] = []
    for it in plan.items:
        jobs = []
        for system, m in plan.matching.items():
            path = m.outputs.get(it.uid)
            if path is None:
                continue
            row = {"system": system, "id": it.id, "subset": it.subset, "snr_db": it.snr_db,
                   "reverb": it.reverb, "length_diff_s": None, "error": None}
            rows[(system, it.uid)] = row
            fp = _fingerprint(path, it.clean)
            todo = []
            for n in plan.metrics_for(system, it):
                cached = cache.get(system, it.uid, keys[n], fp)
                if cached is None:
                    todo.append(n)
                else:
                    row.update(cached)
            meta = cache.get(system, it.uid, "_file", fp)
            if todo or meta is None:
                jobs.append(Job(system, path, todo))
            else:
                row.update(meta)
        if jobs:
            tasks.append((it, jobs))
    return rows, tasks
