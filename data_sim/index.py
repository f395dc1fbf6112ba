"""A corpus index: one row per utterance in memory-mapped columns, so that ten million rows are
a few files in the page cache shared by every rank and worker, not Python objects per rank.

An index is a folder::

    index.json         {"format": "l3se-index", "version": 1, "rows": N,
                        "columns": "columns.XXXX", "files": [...], "languages": [...]}
    columns.XXXX/      one .npy per numeric column, [N] each:
                         duration float32 s, sample_rate int32 Hz, shard int32 (position in
                         "files"), offset int64 (byte offset of a tar member's data, -1 for a
                         whole file), size int64 bytes, dnsmos float32 (NaN: unknown),
                         language int16 (position in "languages", -1: unknown)
                       and per string column (id, text, speaker) NAME.bin, the rows' UTF-8
                       bytes back to back, with NAME.offsets.npy, int64 [N + 1], where row i's
                       bytes start and end (an empty string reads back as None)

``files`` are relative to the index folder when they lie inside it (an index of l3se's own
shards moves with them), absolute otherwise. ``index.json`` is written last and names its
column folder, so rewriting an index is one atomic rename: a reader sees the old index or the
new one, never a mix, and an interrupted write leaves the old one in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from data_sim.files import UMASK, atomic_write
from data_sim.sources import AudioItem, SourceError

FORMAT = "l3se-index"
VERSION = 1
NUMERIC = {
    "duration": np.float32,
    "sample_rate": np.int32,
    "shard": np.int32,
    "offset": np.int64,
    "size": np.int64,
    "dnsmos": np.float32,
    "language": np.int16,
}
STRINGS = ("id", "text", "speaker")


def is_index(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding an l3se index."""
    meta = Path(path) / "index.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, AttributeError):
        return False


class CorpusIndex(Sequence[AudioItem]):
    """The rows of an index folder (or a selection of them) as a sequence of ``AudioItem``,
    each built when asked for. Columns are memory-mapped and only read where touched.

    ``rows``: the index rows this view holds, in its order (None: all, in index order).
    """

    def __init__(self, folder: str | Path, rows: np.ndarray | None = None):
        self.folder = Path(folder)
        meta_path = self.folder / "index.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SourceError(f"{meta_path}: not a readable index ({e})") from None
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise SourceError(f"{meta_path}: not an {FORMAT} version {VERSION} index "
                              f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
        self.meta = meta
        self.files = [f if os.path.isabs(f) else str(self.folder / f) for f in meta["files"]]
        self.languages: list[str] = meta["languages"]
        cols = self.folder / meta["columns"]
        try:
            self._num = {k: np.load(cols / f"{k}.npy", mmap_mode="r") for k in NUMERIC}
            self._str = {k: (_blob(cols / f"{k}.bin"), np.load(cols / f"{k}.offsets.npy",
                                                              mmap_mode="r"))
                         for k in STRINGS}
        except (OSError, ValueError) as e:
            raise SourceError(f"{self.folder}: index columns unreadable ({e})") from None
        if any(len(c) != meta["rows"] for c in self._num.values()):
            raise SourceError(f"{self.folder}: index columns disagree with rows={meta['rows']}")
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    def __reduce__(self):
        # Workers re-open the memory maps instead of receiving copies of the columns.
        return (CorpusIndex, (str(self.folder), self._rows))

    def __len__(self) -> int:
        return self.meta["rows"] if self._rows is None else len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.select(np.arange(len(self))[i])
        i = int(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} rows")
        return self._item(int(self._rows[i]) if self._rows is not None else i % n)

    def __iter__(self) -> Iterator[AudioItem]:
        for r in (range(self.meta["rows"]) if self._rows is None else self._rows.tolist()):
            yield self._item(r)

    def column(self, name: str) -> np.ndarray:
        """A numeric column for this view's rows, [len(self)]."""
        col = self._num[name]
        return col if self._rows is None else col[self._rows]

    def strings(self, name: str) -> list[str | None]:
        """A string column (id, text, speaker) for this view's rows: Python objects, so for
        small views and checks only."""
        rows = range(self.meta["rows"]) if self._rows is None else self._rows.tolist()
        return [self._string(name, r) for r in rows]

    @property
    def shard_ids(self) -> np.ndarray:
        """int [len(self)]: the file (tar shard) each row's audio lives in; rows of one shard
        share a value."""
        return np.asarray(self.column("shard"))

    def select(self, rows: np.ndarray) -> CorpusIndex:
        """A view of this view's rows ``rows`` (positions in this view), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} rows")
        rows = rows % max(len(self), 1)
        return CorpusIndex(self.folder, rows if self._rows is None else self._rows[rows])

    def filter(
        self,
        languages: Iterable[str] | None = None,
        min_seconds: float | None = None,
        max_seconds: float | None = None,
        min_dnsmos: float | None = None,
    ) -> CorpusIndex:
        """The rows labelled with one of ``languages``, lasting ``min_seconds`` to
        ``max_seconds`` and scored at least ``min_dnsmos`` (None: no bound). Rows whose
        language or score is unknown fail a bound on it."""
        keep = np.ones(len(self), dtype=bool)
        if languages is not None:
            wanted = set(languages)
            codes = [c for c, name in enumerate(self.languages) if name in wanted]
            keep &= np.isin(self.column("language"), codes)
        duration = self.column("duration")
        if min_seconds is not None:
            keep &= duration >= min_seconds
        if max_seconds is not None:
            keep &= duration <= max_seconds
        if min_dnsmos is not None:
            keep &= self.column("dnsmos") >= min_dnsmos  # NaN compares False
        return self.select(np.flatnonzero(keep))

    def _string(self, name: str, r: int) -> str | None:
        blob, offsets = self._str[name]
        s = bytes(blob[offsets[r]:offsets[r + 1]]).decode("utf-8")
        return s or None

    def _item(self, r: int) -> AudioItem:
        num = self._num
        offset = int(num["offset"][r])
        language = int(num["language"][r])
        dnsmos = float(num["dnsmos"][r])
        return AudioItem(
            id=self._string("id", r),
            path=self.files[int(num["shard"][r])],
            duration=float(num["duration"][r]),
            sample_rate=int(num["sample_rate"][r]) or None,
            text=self._string("text", r),
            speaker=self._string("speaker", r),
            language=self.languages[language] if language >= 0 else None,
            dnsmos=None if np.isnan(dnsmos) else dnsmos,
            byte_offset=None if offset < 0 else offset,
            byte_size=None if offset < 0 else int(num["size"][r]),
        )


def write_index(items: Iterable[AudioItem], out: str | Path, **extra) -> Path:
    """Write ``items`` (each with a duration) as the index folder ``out``, atomically; ``extra``
    keys go into its index.json. Files are numbered in order of first appearance."""
    out = Path(out)
    files: dict[str, int] = {}
    cols: dict[str, list] = {k: [] for k in (*NUMERIC, *STRINGS)}
    for item in items:
        if item.duration is None:
            raise ValueError(f"{item.location}: an index row needs a duration")
        cols["shard"].append(files.setdefault(os.path.abspath(item.path), len(files)))
        cols["duration"].append(item.duration)
        cols["sample_rate"].append(item.sample_rate or 0)
        cols["offset"].append(-1 if item.byte_offset is None else item.byte_offset)
        cols["size"].append(item.byte_size or 0)
        cols["dnsmos"].append(np.nan if item.dnsmos is None else item.dnsmos)
        cols["language"].append(item.language)
        for k in STRINGS:
            cols[k].append(getattr(item, k) or "")
    languages = sorted({x for x in cols["language"] if x is not None})
    code = {name: c for c, name in enumerate(languages)}
    cols["language"] = [-1 if x is None else code[x] for x in cols["language"]]
    numeric = {k: np.asarray(cols[k], dtype=t) for k, t in NUMERIC.items()}
    strings = {k: cols[k] for k in STRINGS}
    return write_columns(out, numeric, strings, list(files), languages, **extra)


def write_columns(
    out: str | Path,
    numeric: dict[str, np.ndarray],
    strings: dict[str, list[str]],
    files: list[str],
    languages: list[str],
    **extra,
) -> Path:
    """Write an index from whole columns (``numeric``: NAME -> [N] array, ``strings``:
    NAME -> N strings, '' for unknown), atomically."""
    n = len(strings["id"])

    def fill(cols: Path) -> None:
        for k, dtype in NUMERIC.items():
            col = np.asarray(numeric[k], dtype=dtype)
            if col.shape != (n,):
                raise ValueError(f"column {k} has shape {col.shape}, expected ({n},)")
            np.save(cols / f"{k}.npy", col)
        for k in STRINGS:
            encoded = [s.encode("utf-8") for s in strings[k]]
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum([len(b) for b in encoded], out=offsets[1:])
            (cols / f"{k}.bin").write_bytes(b"".join(encoded))
            np.save(cols / f"{k}.offsets.npy", offsets)

    return _commit(Path(out), n, files, languages, fill, extra)


def merge_indexes(parts: Sequence[str | Path], out: str | Path, **extra) -> Path:
    """Concatenate the index folders ``parts`` in order into the index ``out``, atomically,
    column by column through memory maps (the rows never become Python objects)."""
    out = Path(out)
    metas = [json.loads((Path(p) / "index.json").read_text()) for p in parts]
    n = sum(m["rows"] for m in metas)
    languages = sorted({x for m in metas for x in m["languages"]})
    code = {name: c for c, name in enumerate(languages)}
    files = [os.path.abspath(f if os.path.isabs(f) else Path(p) / f)
             for p, m in zip(parts, metas) for f in m["files"]]

    def fill(cols: Path) -> None:
        dst = {k: np.lib.format.open_memmap(cols / f"{k}.npy", mode="w+", dtype=t, shape=(n,))
               for k, t in NUMERIC.items()}
        ends = {k: np.lib.format.open_memmap(cols / f"{k}.offsets.npy", mode="w+",
                                             dtype=np.int64, shape=(n + 1,)) for k in STRINGS}
        with ExitStack() as stack:
            blobs = {k: stack.enter_context(open(cols / f"{k}.bin", "wb")) for k in STRINGS}
            row, file_base, byte_base = 0, 0, dict.fromkeys(STRINGS, 0)
            for p, m in zip(parts, metas):
                src = Path(p) / m["columns"]
                span = slice(row, row + m["rows"])
                for k in NUMERIC:
                    dst[k][span] = np.load(src / f"{k}.npy", mmap_mode="r")
                dst["shard"][span] += file_base
                remap = np.array([code[x] for x in m["languages"]] + [-1], dtype=np.int16)
                dst["language"][span] = remap[dst["language"][span]]  # -1 picks the last
                for k in STRINGS:
                    offsets = np.load(src / f"{k}.offsets.npy", mmap_mode="r")
                    ends[k][row:row + m["rows"] + 1] = offsets + byte_base[k]
                    with open(src / f"{k}.bin", "rb") as f:
                        shutil.copyfileobj(f, blobs[k])
                    byte_base[k] += int(offsets[-1])
                row += m["rows"]
                file_base += len(m["files"])
            for col in (*dst.values(), *ends.values()):
                col.flush()

    return _commit(out, n, files, languages, fill, extra)


def _commit(out: Path, n: int, files: list[str], languages: list[str], fill, extra: dict
            ) -> Path:
    """Write columns with ``fill(folder)`` into a new column folder, then index.json naming it
    (the atomic step), then remove column folders no index.json names."""
    out.mkdir(parents=True, exist_ok=True)
    cols = Path(tempfile.mkdtemp(prefix="columns.", dir=out))
    try:
        os.chmod(cols, 0o777 & ~UMASK)
        fill(cols)
        root = out.resolve()
        stored = [os.path.relpath(f, root) if Path(f).resolve().is_relative_to(root) else
                  os.path.abspath(f) for f in files]
        meta = {"format": FORMAT, "version": VERSION, "rows": n, "columns": cols.name,
                "files": stored, "languages": languages, **extra}
        atomic_write(out / "index.json", json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(cols, ignore_errors=True)
        raise
    for old in out.glob("columns.*"):
        if old.name != cols.name:
            shutil.rmtree(old, ignore_errors=True)
    return out


def _blob(path: Path) -> np.ndarray:
    # np.memmap refuses empty files: an index whose strings are all empty has one.
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")
