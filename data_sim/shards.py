"""Tar shards: index them in place, and write l3se's own from any source.

Reading (``index_shards``): an uncompressed tar is read header by header (``tarfile`` seeks past
member data), so a shard is indexed by reading its headers, its small ``.json`` members and the
first bytes of each audio member (sample rate, and a check that it is audio at all). Two layouts:

- WebDataset style, Emilia's current release: ``{key}.mp3`` + ``{key}.json`` with ``id``,
  ``text``, ``duration``, ``speaker``, ``language``, ``dnsmos``; l3se's own shards are the same
  with ``{key}.flac`` and a ``sample_rate``.
- A batch tar holding a ``.jsonl`` whose rows name audio members by relative path (``wav``,
  ``path`` or ``audio``): Emilia's older release once un-gzipped. Gzip cannot be read in place,
  so a ``.tar.gz`` is only a source for ``write_shards``, which un-gzips it once.

Each shard's rows are kept as a partial index under ``OUT/parts`` when the shard is done, so an
interrupted run resumes where it stopped; members that cannot be used are left out and listed,
with the reason, in ``OUT/skipped.jsonl``.

Writing (``write_shards``): ``OUT/shards.000000.tar`` ... of ``{id}.flac`` (16-bit, at the
source's own sample rate) + ``{id}.json``, and their index in ``OUT``. Which item goes to which
shard is a function of the sources, ``shuffle`` and ``seed`` only, so a re-run writes only the
shards it lacks and agrees with the ones it kept.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from data_sim.audio import AUDIO_EXTENSIONS, AudioError, audio_info, decode, flac_bytes
from data_sim.files import atomic_path, atomic_write
from data_sim.index import is_index, merge_indexes, write_index
from data_sim.sources import AudioItem, SourceError, load_source, read_rir_folder

GZIP_SUFFIXES = (".tar.gz", ".tgz")
# Bytes read from the start of each audio member: enough for a FLAC STREAMINFO block or the
# first MP3 frames, not the whole file. A member whose head does not parse is read whole.
PROBE_BYTES = 16384
# jsonl fields that name a batch tar's audio member, in order of preference.
AUDIO_FIELDS = ("wav", "path", "audio", "audio_path")


@dataclass
class Summary:
    rows: int
    hours: float
    shards: int
    skipped: int
    out: Path

    def line(self, verb: str) -> str:
        more = f"; {self.skipped} skipped (see {self.out / 'skipped.jsonl'})" if self.skipped else ""
        return (f"{verb} {self.rows} utterances ({self.hours:.2f} h) in {self.shards} shards "
                f"into {self.out}{more}")


def read_tar(path: str | Path, name_as: str | Path | None = None
             ) -> tuple[list[AudioItem], list[dict]]:
    """The utterances of one uncompressed tar shard, in member order, and a report row
    (``file``, ``member``, ``reason``) per member left out. Items point into ``name_as``
    (default ``path``): a shard being written is read under the name it will have."""
    path = str(path)
    where = str(name_as or path)
    skipped: list[dict] = []
    audio: dict[str, tarfile.TarInfo] = {}
    sidecars: dict[str, tuple[str, bytes]] = {}
    manifests: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            try:
                for m in tar:
                    if not m.isfile():
                        continue
                    key, ext = os.path.splitext(m.name)
                    ext = ext.lower()
                    if ext in AUDIO_EXTENSIONS:
                        if key in audio:
                            skipped.append(_skip(where, m.name, "a second audio member of key"))
                        else:
                            audio[key] = m
                    elif ext in (".json", ".jsonl"):
                        data = _member_bytes(tar, m)
                        (manifests.append((m.name, data)) if ext == ".jsonl"
                         else sidecars.__setitem__(key, (m.name, data)))
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                skipped.append(_skip(where, None, f"unreadable after {len(audio)} audio members "
                                                  f"({_reason(e)})"))
    except (tarfile.TarError, OSError) as e:
        return [], [_skip(where, None, f"not a readable tar ({_reason(e)})")]
    meta, meta_skips = _metadata(where, audio, sidecars, manifests)
    skipped += meta_skips
    size = os.path.getsize(path)
    items = []
    with open(path, "rb") as f:
        for key, m in audio.items():
            if key not in meta:
                continue
            reason = None
            if m.offset_data + m.size > size:
                reason = f"truncated ({size - m.offset_data} of {m.size} bytes)"
            else:
                try:
                    items.append(_item(path, where, f, m, meta[key]))
                except AudioError as e:
                    reason = e.reason
                except (KeyError, TypeError, ValueError) as e:
                    reason = f"bad metadata ({_reason(e)})"
            if reason is not None:
                skipped.append(_skip(where, m.name, reason))
    return items, skipped


def index_shards(patterns: Iterable[str], out: str | Path, jobs: int = 1,
                 progress: bool = True) -> Summary:
    """Index the tar shards matching ``patterns`` (globs or paths, sorted per pattern) into the
    index folder ``out``: one partial index per shard under ``out/parts`` (kept, so a re-run
    reads only the shards it lacks or that changed), then the merged index and
    ``out/skipped.jsonl``."""
    out = Path(out)
    shards = expand(patterns)
    for shard in shards:
        if shard.name.endswith(GZIP_SUFFIXES) or _is_gzip(shard):
            raise SourceError(f"{shard} is gzip-compressed (Emilia's older release) and cannot "
                              f"be read in place: re-pack it with `l3se data shard {shard} OUT`")
    parts = [(str(s), str(_part_path(out, s))) for s in shards]
    todo = [job for job in parts if not _finished(*job)]
    for _ in _run(_index_job, todo, jobs, progress, "index"):
        pass
    return _finish(out, [p for _, p in parts], [])


def write_shards(
    sources: Iterable[str],
    out: str | Path,
    shard_size: int = 1000,
    shuffle: bool = False,
    seed: int = 0,
    jobs: int = 1,
    rirs: bool = False,
    progress: bool = True,
) -> Summary:
    """Write l3se's shards of everything ``sources`` hold (anything ``load_source`` reads, tar
    shards, globs of them, and gzipped batch tars of Emilia's older release) into ``out``, and
    their index. ``rirs``: folders are RIR folders (OpenSLR's ``*noise*`` recordings left out).
    Shard ``k`` holds items ``k * shard_size ...`` of the sources' items in listing order, or
    in the order of a ``seed``-ed permutation with ``shuffle``."""
    if shard_size < 1:
        raise SourceError(f"--shard-size must be at least 1, got {shard_size}")
    out = Path(out)
    skipped: list[dict] = []
    items = list_sources(sources, out / "staging", skipped, rirs)
    if not items:
        raise SourceError("the sources hold no readable audio")
    _require_unique_ids(items)
    order = (np.random.default_rng(seed).permutation(len(items)) if shuffle
             else np.arange(len(items)))
    jobs_list = []
    for k, start in enumerate(range(0, len(items), shard_size)):
        tar = out / f"shards.{k:06d}.tar"
        part = out / "parts" / f"shards.{k:06d}"
        assigned = [items[i] for i in order[start:start + shard_size]]
        if not _finished(str(tar), str(part), _digest(assigned)):
            jobs_list.append((str(tar), str(part), assigned))
    for _ in _run(_shard_job, jobs_list, jobs, progress, "shard"):
        pass
    n_shards = -(-len(items) // shard_size)
    for stale in [*out.glob("shards.*.tar"), *(out / "parts").glob("shards.*")]:
        # Left by an earlier run that cut more shards: not part of this index.
        number = stale.name.split(".")[1]
        if number.isdigit() and int(number) >= n_shards:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    summary = _finish(out, [str(out / "parts" / f"shards.{k:06d}") for k in range(n_shards)],
                      skipped)
    shutil.rmtree(out / "staging", ignore_errors=True)
    return summary


def list_sources(sources: Iterable[str], staging: Path, skipped: list[dict],
                 rirs: bool = False) -> list[AudioItem]:
    """The items of every source, in the order given (globs sorted); report rows of what was
    left out are added to ``skipped``. Gzipped tars are un-gzipped once into ``staging``."""
    items: list[AudioItem] = []
    for spec in sources:
        paths = [Path(p) for p in sorted(glob.glob(spec))] if glob.has_magic(spec) else [Path(spec)]
        if not paths:
            raise SourceError(f"nothing matches {spec}")
        for path in paths:
            if path.name.endswith(GZIP_SUFFIXES):
                path = _ungzip(path, staging, skipped)
            if path.is_file() and path.suffix == ".tar":
                found, skips = read_tar(path)
                items += found
                skipped += skips
            elif rirs and path.is_dir() and not is_index(path):
                errors: list[AudioError] = []
                items += read_rir_folder(path, errors)
                skipped += [_skip(e.path, None, e.reason) for e in errors]
            else:
                errors = []
                items += list(load_source(path, errors))
                skipped += [_skip(e.path, None, e.reason) for e in errors]
    return items


def expand(patterns: Iterable[str]) -> list[Path]:
    """The files each pattern names, globs sorted, in pattern order; a pattern naming nothing
    is a ``SourceError``."""
    found = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise SourceError(f"no file matches {pattern}")
        found += [Path(m) for m in matches]
    return found


def _index_job(job: tuple[str, str]) -> None:
    shard, part = job
    items, skipped = read_tar(shard)
    _write_part(part, shard, items, skipped)


def _shard_job(job: tuple[str, str, list[AudioItem]]) -> None:
    """Write one shard atomically, then its partial index (the shard's commit point)."""
    tar_path, part, items = job
    skipped = []
    with atomic_path(tar_path) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for item in items:
                try:
                    data, sr = decode(item.path, byte_range=item.byte_range)
                except AudioError as e:
                    skipped.append(_skip(e.path, None, e.reason))
                    continue
                meta = {"id": item.id, "duration": round(len(data) / sr, 6), "sample_rate": sr,
                        "text": item.text, "speaker": item.speaker, "language": item.language,
                        "dnsmos": item.dnsmos}
                meta = {k: v for k, v in meta.items() if v is not None}
                _add(tar, f"{item.id}.flac", flac_bytes(data, sr))
                _add(tar, f"{item.id}.json", json.dumps(meta, ensure_ascii=False).encode())
        written, unread = read_tar(tmp, name_as=tar_path)
    _write_part(part, tar_path, written, skipped + unread, _digest(items))


def _write_part(part: str, shard: str, items: list[AudioItem], skipped: list[dict],
                assigned: str | None = None) -> None:
    st = os.stat(shard)
    write_index(items, part, skipped=skipped, source=_source_key(shard, st), assigned=assigned)


def _finished(shard: str, part: str, assigned: str | None = None) -> bool:
    """Whether ``part`` is the index of ``shard`` as it is now (same size and mtime) and, for a
    shard being written, of the items now assigned to it (``_digest``)."""
    meta = Path(part) / "index.json"
    if not (meta.is_file() and os.path.isfile(shard)):
        return False
    meta = json.loads(meta.read_text())
    return (meta.get("source") == _source_key(shard, os.stat(shard))
            and meta.get("assigned") == assigned)


def _digest(items: list[AudioItem]) -> str:
    """Names the items a shard is written from: a re-run with other sources, sizes or seeds
    rewrites the shards whose items changed."""
    return hashlib.sha1("\n".join(f"{i.id}\t{i.location}" for i in items).encode()).hexdigest()


def _source_key(shard: str, st: os.stat_result) -> dict:
    return {"path": os.path.abspath(shard), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _part_path(out: Path, shard: Path) -> Path:
    # Shards of one name in different folders (EN/ and ZH/, Emilia and Emilia-YODAS) differ.
    tag = hashlib.sha1(os.path.abspath(shard).encode()).hexdigest()[:10]
    return out / "parts" / f"{shard.name}.{tag}"


def _finish(out: Path, parts: list[str], skipped: list[dict]) -> Summary:
    """Merge the finished parts into the index ``out`` and write the skip report."""
    for p in parts:
        skipped += json.loads((Path(p) / "index.json").read_text())["skipped"]
    merge_indexes(parts, out)
    atomic_write(out / "skipped.jsonl",
                 "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in skipped))
    from data_sim.index import CorpusIndex

    index = CorpusIndex(out)
    seconds = float(np.asarray(index.column("duration"), dtype=np.float64).sum())
    return Summary(len(index), seconds / 3600, len(parts), len(skipped), out)


def _run(fn: Callable, jobs: list, workers: int, progress: bool, desc: str) -> Iterator:
    bar = tqdm(total=len(jobs), desc=desc, unit="shard", disable=not progress)
    if workers <= 1 or len(jobs) < 2:
        results: Iterable = map(fn, jobs)
        pool = None
    else:
        # spawn: forking a parent that holds torch/tqdm threads can deadlock the children.
        pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)))
        results = pool.imap_unordered(fn, jobs)
    try:
        for r in results:
            bar.update()
            yield r
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()


def _metadata(where: str, audio: dict[str, tarfile.TarInfo], sidecars: dict[str, tuple],
              manifests: list[tuple[str, bytes]]) -> tuple[dict[str, dict], list[dict]]:
    """Per audio key, its metadata: its ``.json`` sidecar, else the ``.jsonl`` row naming it,
    else none (``{}``: all from the audio header). Bad JSON leaves its sample out."""
    skipped = []
    meta: dict[str, dict] = {}
    by_stem = {os.path.basename(k): k for k in audio}
    for name, data in manifests:
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rel = str(next(row[f] for f in AUDIO_FIELDS if f in row))
            except (json.JSONDecodeError, StopIteration, TypeError):
                skipped.append(_skip(where, f"{name}:{n}", "not a JSON object naming audio "
                                     f"({'/'.join(AUDIO_FIELDS)})"))
                continue
            stem = os.path.splitext(rel)[0]
            key = stem if stem in audio else by_stem.get(os.path.basename(stem))
            if key is None:
                skipped.append(_skip(where, f"{name}:{n}", f"no audio member {rel}"))
            else:
                meta[key] = row
    for key, (name, data) in sidecars.items():
        try:
            row = json.loads(data)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            skipped.append(_skip(where, name, f"bad JSON ({_reason(e)})"))
            audio.pop(key, None)
            continue
        if key not in audio:
            skipped.append(_skip(where, name, "no audio member beside it"))
        else:
            meta[key] = row
    for key in audio:
        meta.setdefault(key, {})
    return meta, skipped


def _item(path: str, where: str, f, m: tarfile.TarInfo, meta: dict) -> AudioItem:
    """The row of audio member ``m`` (open file ``f`` of the tar at ``path``)."""
    f.seek(m.offset_data)
    head = f.read(min(m.size, PROBE_BYTES))
    member = (m.offset_data, m.size)
    sr = _header_rate(head, m.name.lower().endswith(".mp3"))
    duration = meta.get("duration")
    if sr is None or duration is None:
        info = audio_info(path, member)
        sr, duration = info.sample_rate, info.duration
    duration = float(duration)
    if not duration > 0:
        raise AudioError(m.name, f"duration {duration}")
    key = os.path.splitext(m.name)[0]
    dnsmos = meta.get("dnsmos")
    return AudioItem(
        id=str(meta.get("id") or key),
        path=where,
        duration=duration,
        sample_rate=int(meta.get("sample_rate") or sr),
        text=meta.get("text"),
        speaker=None if meta.get("speaker") is None else str(meta["speaker"]),
        language=meta.get("language"),
        dnsmos=None if dnsmos is None else float(dnsmos),
        byte_offset=m.offset_data,
        byte_size=m.size,
    )


def _header_rate(head: bytes, mp3: bool) -> int | None:
    """The sample rate the first bytes of an audio file declare, or None when they do not
    parse. MP3 is parsed here: libmpg123 prints a warning per file given a file's head only."""
    if not mp3:
        try:
            return sf.info(io.BytesIO(head)).samplerate
        except Exception:  # libsndfile raises several types for what it cannot parse
            return None
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:  # ID3v2 tag: 10-byte header, syncsafe size
        start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
    frame = head[start:start + 4]
    if len(frame) < 4 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        return None
    version, layer = (frame[1] >> 3) & 3, (frame[1] >> 1) & 3
    bitrate, rate = frame[2] >> 4, (frame[2] >> 2) & 3
    if version == 1 or layer == 0 or bitrate == 15 or rate == 3:
        return None
    return _MPEG_RATES[rate] >> {3: 0, 2: 1, 0: 2}[version]  # MPEG1, 2, 2.5


_MPEG_RATES = (44100, 48000, 32000)


def _ungzip(src: Path, staging: Path, skipped: list[dict]) -> Path:
    """``src`` un-gzipped once into ``staging`` (reused by a re-run). A damaged archive keeps
    what could be read, and the damage is reported."""
    tag = hashlib.sha1(os.path.abspath(src).encode()).hexdigest()[:10]
    stem = src.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar")
    dst = staging / f"{stem}.{tag}.tar"
    if dst.is_file():
        return dst
    if not src.is_file():
        raise SourceError(f"data source not found: {src}")
    with atomic_path(dst) as tmp, open(tmp, "wb") as f:
        try:
            with gzip.open(src) as g:
                shutil.copyfileobj(g, f, 1 << 20)
        except (OSError, EOFError, zlib.error) as e:
            skipped.append(_skip(str(src), None, f"damaged gzip, kept the first "
                                                 f"{f.tell()} bytes ({_reason(e)})"))
    return dst


def _require_unique_ids(items: list[AudioItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        first = seen.setdefault(item.id, item.location)
        if first != item.location:
            raise SourceError(f"id {item.id} names two utterances ({first} and "
                              f"{item.location}): shard members are named by id")


def _member_bytes(tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(m)
    return f.read() if f is not None else b""


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _skip(file: str, member: str | None, reason: str) -> dict:
    return {"file": str(file), "member": member, "reason": reason}


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return msg[-1] if msg else type(e).__name__
