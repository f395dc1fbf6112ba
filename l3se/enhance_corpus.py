"""Enhance a whole corpus: plan the jobs (inputs, output paths, resume, sharding), run them in
length-sorted batches and write a report.

    IN  a file, a folder (recursive) or a manifest (.jsonl with "path" / "id", or a Kaldi wav.scp)
    OUT a mirror of the folder tree, ``OUT/<id>.wav`` for a manifest, a file or a folder for a
        single file; every output is a 16 kHz .wav

Files are read and enhanced ``files_per_batch`` at a time; the model splits long files into
chunks and decodes ``chunks_per_batch`` chunks at a time. Outputs are written atomically (a
temporary file in the same folder, then a rename), so an existing output is always complete and
a rerun skips it. A file that cannot be used is recorded with its reason and the rest carries on.
Under ``torchrun`` (RANK / WORLD_SIZE) rank r takes the jobs i with i % world == r of the sorted
job list and writes its own report part; whichever rank finishes last merges the parts.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from data_sim.audio import AUDIO_EXTENSIONS, AudioError, audio_info, load_audio, write_audio
from data_sim.files import atomic_write
from l3se.enhancer import (
    DEFAULT_MODEL_DIR,
    MIN_SECONDS,
    Enhancer,
    check_model_dir,
    resolve_device,
    resolve_dtype,
)

log = logging.getLogger(__name__)

# Everything libsndfile decodes that corpora come in (.opus is Ogg/Opus).
AUDIO_SUFFIXES = tuple(sorted({*AUDIO_EXTENSIONS, ".opus", ".aif", ".aiff", ".au"}))
REPORT_NAME = "enhance_report.json"


class InputError(ValueError):
    """A mistake in what was asked (missing input, output inside the input, ...)."""


@dataclass
class Job:
    id: str
    input: str
    output: str


@dataclass
class Result:
    id: str
    input: str
    output: str
    # ok: the output exists (written now, or already there: reason "exists");
    # skipped: the input cannot be used; failed: enhancing or writing raised.
    status: str
    reason: str | None = None
    duration: float | None = None  # seconds of input audio
    seconds: float = 0.0  # processing time spent on it


def plan_jobs(inp: str | Path, out: str | Path) -> list[Job]:
    """One job per input, sorted by id; raises InputError for what cannot be meant."""
    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise InputError(f"input not found: {inp}")
    if inp.is_dir():
        return _folder_jobs(inp, out)
    suffix = inp.suffix.lower()
    if suffix == ".jsonl":
        return _manifest_jobs(_jsonl_entries(inp), out)
    if suffix == ".scp":
        return _manifest_jobs(_scp_entries(inp), out)
    if suffix not in AUDIO_SUFFIXES:
        raise InputError(
            f"{inp}: expected an audio file ({' '.join(AUDIO_SUFFIXES)}), a folder, a .jsonl "
            "manifest or a wav.scp"
        )
    if out.suffix.lower() == ".wav":
        target = out
    elif out.is_dir() or not out.suffix:
        target = out / f"{inp.stem}.wav"
    else:
        raise InputError(f"output {out}: give a .wav file or a folder")
    if target.resolve() == inp.resolve():
        raise InputError(f"output {target} would overwrite the input")
    return [Job(id=inp.stem, input=str(inp), output=str(target))]


def shard(jobs: list, rank: int, world: int) -> list:
    """Rank ``rank``'s share of ``world``: every job in exactly one share."""
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"rank {rank} is not in a world of {world}")
    return jobs[rank::world]


def dist_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError("RANK and WORLD_SIZE must be integers") from None


def default_report(inp: str | Path, out: str | Path) -> Path | None:
    """``OUT/enhance_report.json`` when OUT is a folder of outputs; None for one file."""
    out = Path(out)
    if Path(inp).is_file() and Path(inp).suffix.lower() in AUDIO_SUFFIXES:
        return None
    return out / REPORT_NAME


def part_path(report: Path, rank: int, world: int) -> Path:
    return report.with_name(f"{report.stem}.rank{rank}-of-{world}{report.suffix}")


def enhance_corpus(
    inp: str | Path,
    out: str | Path,
    model=None,
    *,
    files_per_batch: int | None = None,
    chunks_per_batch: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    decode: dict | None = None,
    mode: str | None = None,
    report: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    rank: int | None = None,
    world: int | None = None,
    min_seconds: float = MIN_SECONDS,
    announce: Callable[[str], None] | None = log.info,
    decode_threads: int | None = 1,
) -> dict:
    """Enhance every input of ``inp`` into ``out``; returns the report (``files`` + ``summary``).

    ``model`` is a model directory (None: the bundled default) or a loaded ``Enhancer`` (or an
    object with its ``cfg``, ``sample_rate`` and ``enhance_batch``); a directory is loaded only
    when something is left to do, and its card's one line (``l3se.card.model_line``) then goes
    to ``announce`` (rank 0 only; None: nowhere). ``decode_threads``: the CPU threads of a loaded
    directory's token loop (``Enhancer``'s).
    ``decode`` (the fields it names), ``mode`` ("lm" or "direct", see ``l3se.enhancer``) and
    ``chunks_per_batch`` replace the model's saved settings; ``files_per_batch`` defaults to the
    chunks per batch, which every file's first chunk fills. ``report`` defaults to
    ``OUT/enhance_report.json`` for a folder or manifest and to no file for a single input.
    """
    start = time.perf_counter()
    if rank is None or world is None:
        rank, world = dist_rank()
    for name, size in [("files_per_batch", files_per_batch),
                       ("chunks_per_batch", chunks_per_batch)]:
        if size is not None and size < 1:
            raise InputError(f"{name} must be at least 1, got {size}")
    jobs = shard(plan_jobs(inp, out), rank, world)
    report_path = Path(report) if report is not None else default_report(inp, out)
    if report_path is not None and world > 1:
        part_path(report_path, rank, world).unlink(missing_ok=True)

    results: dict[str, Result] = {}
    todo: list[tuple[Job, float]] = []
    for job in jobs:
        if Path(job.output).exists() and not overwrite:
            results[job.id] = Result(**asdict(job), status="ok", reason="exists")
            continue
        _remove_stale_parts(Path(job.output))
        try:
            duration = audio_info(job.input).duration
        except AudioError as e:
            results[job.id] = Result(**asdict(job), status="skipped", reason=e.reason)
            continue
        if duration < min_seconds:
            results[job.id] = Result(**asdict(job), status="skipped", duration=duration,
                                     reason=f"too short ({duration:.3f} s < {min_seconds} s)")
            continue
        todo.append((job, duration))

    if todo:
        enhancer = _load_model(model, device, dtype, announce if rank == 0 else None,
                               decode_threads)
        settings = _settings(enhancer, decode, mode, chunks_per_batch)
        _run(enhancer, settings, files_per_batch or settings["chunks_per_batch"], todo, results,
             progress)

    summary = _summary(list(results.values()), time.perf_counter() - start)
    out_report = {"files": [asdict(results[j.id]) for j in jobs], "summary": summary}
    if report_path is not None:
        if world > 1:
            _write_json(part_path(report_path, rank, world), out_report)
            merged = merge_parts(report_path, world)
            if merged is not None:
                _write_json(report_path, merged)
        else:
            _write_json(report_path, out_report)
    return out_report


def merge_parts(report: Path, world: int) -> dict | None:
    """The ranks' report parts as one report, or None while some rank has not written its own."""
    parts = [part_path(report, r, world) for r in range(world)]
    if not all(p.is_file() for p in parts):
        return None
    loaded = [json.loads(p.read_text()) for p in parts]
    files = [f for part in loaded for f in part["files"]]
    files.sort(key=lambda f: f["id"])
    wall = max(part["summary"]["wall_seconds"] for part in loaded)
    return {"files": files, "summary": _summary([Result(**f) for f in files], wall)}


def exit_status(report: dict) -> int:
    """0 when every file is ok, else 1."""
    s = report["summary"]
    return 0 if s["ok"] == s["files"] else 1


def _run(
    enhancer, settings: dict, files_per_batch: int, todo: list[tuple[Job, float]],
    results: dict[str, Result], progress: bool,
):
    from tqdm import tqdm

    # Similar durations batch together (less padding); longest first shows memory trouble early.
    todo = sorted(todo, key=lambda jd: -jd[1])
    batches = [todo[k : k + files_per_batch] for k in range(0, len(todo), files_per_batch)]
    load = functools.partial(_load_batch, rate=enhancer.sample_rate)
    bar = tqdm(total=len(todo), unit="file", desc="enhance", disable=not progress)
    audio_s, busy_s = 0.0, 0.0
    # Reading the next batch overlaps with enhancing the current one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if batches else None
        for k, batch in enumerate(batches):
            loaded = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(load, batches[k + 1])
            ready = []
            for (job, duration), wav in zip(batch, loaded):
                if isinstance(wav, AudioError):
                    results[job.id] = Result(**asdict(job), status="skipped", reason=wav.reason,
                                             duration=duration)
                else:
                    ready.append((job, duration, wav))
            t = time.perf_counter()
            _enhance_and_write(enhancer, settings, ready, results)
            busy_s += time.perf_counter() - t
            audio_s += sum(d for _, d, _ in ready)
            bar.update(len(batch))
            if audio_s:
                bar.set_postfix(rtf=f"{busy_s / audio_s:.3f}")
    bar.close()


def _load_batch(batch: list[tuple[Job, float]], rate: int) -> list:
    out = []
    for job, _ in batch:
        try:
            out.append(load_audio(job.input, rate, reject_silent=True))
        except AudioError as e:
            out.append(e)
    return out


def _enhance_and_write(enhancer, settings: dict, ready: list, results: dict[str, Result]) -> None:
    """Enhance ``ready`` as one batch; if that raises, item by item so that one bad input (or
    one too long for memory) fails alone."""
    if not ready:
        return
    t = time.perf_counter()
    rate = enhancer.sample_rate
    try:
        outputs = enhancer.enhance_batch([(wav, rate) for _, _, wav in ready], **settings)
    except Exception as e:
        if len(ready) == 1:
            job, duration, _ = ready[0]
            log.warning("failed to enhance %s: %s", job.input, e)
            results[job.id] = Result(**asdict(job), status="failed", duration=duration,
                                     reason=_describe(e), seconds=time.perf_counter() - t)
            return
        for item in ready:
            _enhance_and_write(enhancer, settings, [item], results)
        return
    elapsed = time.perf_counter() - t
    total = sum(d for _, d, _ in ready)
    for (job, duration, _), wav in zip(ready, outputs):
        t = time.perf_counter()
        try:
            write_audio(job.output, wav, rate)
        except Exception as e:
            results[job.id] = Result(**asdict(job), status="failed", duration=duration,
                                     reason=f"write failed: {_describe(e)}")
            continue
        # A batch's time is shared out by duration: the generate loop dominates and scales so.
        seconds = elapsed * duration / total + time.perf_counter() - t
        results[job.id] = Result(**asdict(job), status="ok", duration=duration, seconds=seconds)


def _load_model(model, device: str, dtype: str, announce: Callable[[str], None] | None,
                decode_threads: int | None = 1):
    if hasattr(model, "enhance_batch"):
        return model
    from l3se.card import model_line

    try:
        path = check_model_dir(DEFAULT_MODEL_DIR if model is None else model)
        resolve_dtype(dtype, resolve_device(device))
    except (FileNotFoundError, ValueError) as e:
        raise InputError(str(e)) from None
    if device == "auto" and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if announce is not None:
        announce(model_line(path))
    try:
        return Enhancer.from_pretrained(path, device=device, dtype=dtype,
                                        decode_threads=decode_threads)
    except ValueError as e:
        raise InputError(str(e)) from None


def _settings(enhancer, decode: dict | None, mode: str | None, chunks_per_batch: int | None):
    """The per-call settings of ``enhancer.enhance_batch``: its model's, with what was given."""
    cfg = enhancer.cfg
    mode = cfg.mode if mode is None else mode
    try:
        enhancer.check_mode(mode)
        decode = dataclasses.replace(cfg.decode, **(decode or {}))
    except ValueError as e:  # ConfigError included
        raise InputError(str(e)) from None
    if mode == "direct":
        log.info("mode direct: codec decoder on the quantized NI-Encoder output, no LM")
    return {"decode": decode, "mode": mode,
            "chunks_per_batch": chunks_per_batch or cfg.chunks_per_batch}


def _summary(results: list[Result], wall: float) -> dict:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    done = [r for r in results if r.status == "ok" and r.reason is None]
    audio = sum(r.duration or 0.0 for r in done)
    busy = sum(r.seconds for r in done)
    return {
        "files": len(results),
        **counts,
        "resumed": sum(r.reason == "exists" for r in results),
        "audio_seconds": round(audio, 3),
        "wall_seconds": round(wall, 3),
        # Model time per second of audio enhanced in this run (I/O excluded).
        "rtf": round(busy / audio, 4) if audio else None,
    }


def _folder_jobs(root: Path, out: Path) -> list[Job]:
    if out.resolve() == root.resolve() or out.resolve().is_relative_to(root.resolve()):
        raise InputError(f"output folder {out} is inside the input folder {root}")
    if out.is_file():
        raise InputError(f"output {out} is a file; a folder input needs an output folder")
    paths = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not paths:
        raise InputError(f"no audio files ({' '.join(AUDIO_SUFFIXES)}) under {root}")
    rels = [p.relative_to(root) for p in paths]
    targets = [r.with_suffix(".wav") for r in rels]
    claimed: dict[Path, int] = {}
    for t in targets:
        claimed[t] = claimed.get(t, 0) + 1
    jobs = []
    for p, rel, target in zip(paths, rels, targets):
        # a.flac next to a.wav would both become a.wav: the non-wav one keeps its suffix.
        if claimed[target] > 1 and rel.suffix.lower() != ".wav":
            target = rel.with_name(rel.name + ".wav")
        jobs.append(Job(id=target.with_suffix("").as_posix(), input=str(p),
                        output=str(out / target)))
    return jobs


def _jsonl_entries(manifest: Path) -> list[tuple[str, Path]]:
    from data_sim.sources import SourceError, jsonl_rows

    try:
        rows = jsonl_rows(manifest)
    except SourceError as e:
        raise InputError(str(e)) from None
    entries = []
    for n, row in rows:
        if "path" not in row:
            raise InputError(f"{manifest}:{n}: each line needs a 'path'")
        path = Path(row["path"])
        if not path.is_absolute():
            path = manifest.parent / path
        entries.append((str(row.get("id") or _default_id(path, manifest.parent)), path))
    return entries


def _default_id(path: Path, base: Path) -> str:
    """A manifest row without an id: its path relative to the manifest (else its file name),
    without the suffix, so that the output lands under OUT."""
    try:
        rel = path.resolve().relative_to(base.resolve())
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def _scp_entries(scp: Path) -> list[tuple[str, Path]]:
    from data_sim.sources import SourceError, parse_wav_scp

    try:
        return [(item.id, Path(item.path)) for item in parse_wav_scp(scp)]
    except SourceError as e:
        raise InputError(str(e)) from None


def _manifest_jobs(entries: list[tuple[str, Path]], out: Path) -> list[Job]:
    if not entries:
        raise InputError("the manifest lists no files")
    if out.is_file():
        raise InputError(f"output {out} is a file; a manifest needs an output folder")
    seen: set[str] = set()
    jobs = []
    for uid, path in entries:
        rel = Path(uid)
        if rel.is_absolute() or ".." in rel.parts or not rel.name:
            raise InputError(f"id {uid!r} cannot name a file under the output folder")
        if uid in seen:
            raise InputError(f"id {uid!r} appears twice in the manifest")
        seen.add(uid)
        jobs.append(Job(id=uid, input=str(path), output=str(out / f"{uid}.wav")))
    return sorted(jobs, key=lambda j: j.id)


def _remove_stale_parts(output: Path) -> None:
    """Temporary files that a killed run left beside this output (``write_audio``'s naming);
    only this job's, so that other ranks' writes in progress are left alone."""
    if output.parent.is_dir():
        for tmp in output.parent.glob(f".{glob.escape(output.name)}.*.part"):
            tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _describe(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[-1]}" if msg else type(e).__name__
